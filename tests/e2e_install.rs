//! End-to-end tests of the packages operators install, each installed the way an operator
//! would, then a request routed through a real Prosody (0.12, or 13 with `make test-e2e-13`):
//!
//! - the development rock that `make rock` builds (`luarocks make --tree` on
//!   mod_client_proxy-dev-1.rockspec, which runs cargo, as the README says; then
//!   `luarocks pack` from that tree), installed with `luarocks install --tree=<dir>` into a
//!   temp tree on Prosody's `plugin_paths` (Prosody looks for share/lua/5.x/mod_<name>.lua
//!   in each plugin path), with `prosodyctl install <rock>` and with `prosodyctl install
//!   --server=<dir> mod_client_proxy` (a local rocks server), which run luarocks into
//!   Prosody's own tree (installer_plugin_path), with no plugin path of ours at all;
//! - the release rock of `make dist` (dist/lua5.4/, `luarocks build` of
//!   mod_client_proxy-<version>-1.rockspec from the release tarball), with `prosodyctl
//!   install <rock>`;
//! - the Debian package of `make deb` (dist/prosody-mod-client-proxy_<version>-1_<arch>.deb),
//!   unpacked with `dpkg -x` into a throwaway root (never installed into the system).
//!
//! The shim must find its library where the package put it: the log line "Proxying ...
//! (native core <version>, <library path>)" says which file it loaded and its version. Every
//! shipped library is stripped (under [`MAX_LIBRARY_BYTES`]). Needs `make rock` and `make
//! dist deb` first (or $CLIENT_PROXY_ROCK, $CLIENT_PROXY_RELEASE_ROCK, $CLIENT_PROXY_DEB);
//! `make test` does both.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::client::*;
use support::implementer::answered_by;
use support::setup::*;
use support::{unique_dir, ComponentSpec, Prosody};

/// The Lua of the Prosody under test (Debian's 0.12 and 13 run Lua 5.4).
const LUA_VERSION: &str = "5.4";

/// The release (Cargo.toml), which the packages carry and the library reports.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A shipped library is stripped (about 1.4 MB; with its debug info about 12 MB).
const MAX_LIBRARY_BYTES: u64 = 2_000_000;

/// `$<var>` if set, else the one file in `dir` whose name starts with `prefix` and ends
/// with `suffix`; panics naming `make` to run when there is none.
fn artifact(var: &str, dir: &Path, prefix: &str, suffix: &str, make: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    name.starts_with(prefix) && name.ends_with(suffix)
                })
                .collect()
        })
        .unwrap_or_default();
    match found.as_slice() {
        [one] => one.clone(),
        [] => panic!(
            "no {prefix}*{suffix} in {}: run `{make}` first (or set ${var})",
            dir.display()
        ),
        many => panic!("several {prefix}*{suffix} in {}: {many:?}", dir.display()),
    }
}

/// dist/ of the checkout, where `make dist` and `make deb` write.
fn dist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist")
}

/// The release rock for Lua 5.4: `$CLIENT_PROXY_RELEASE_ROCK`, else
/// dist/lua5.4/mod_client_proxy-<version>-1.<arch>.rock.
fn release_rock_path() -> PathBuf {
    artifact(
        "CLIENT_PROXY_RELEASE_ROCK",
        &dist_dir().join(format!("lua{LUA_VERSION}")),
        &format!("mod_client_proxy-{VERSION}-1."),
        ".rock",
        "make dist",
    )
}

/// The Debian package: `$CLIENT_PROXY_DEB`, else
/// dist/prosody-mod-client-proxy_<version>-1_<arch>.deb.
fn deb_path() -> PathBuf {
    artifact(
        "CLIENT_PROXY_DEB",
        &dist_dir(),
        &format!("prosody-mod-client-proxy_{VERSION}-1_"),
        ".deb",
        "make deb",
    )
}

/// Panics unless `library` is a stripped library (under [`MAX_LIBRARY_BYTES`]).
fn assert_shipped_size(library: &Path) {
    let size = fs::metadata(library)
        .unwrap_or_else(|e| panic!("{}: {e}", library.display()))
        .len();
    assert!(
        size < MAX_LIBRARY_BYTES,
        "{} is {size} bytes, not under {MAX_LIBRARY_BYTES}: not stripped?",
        library.display()
    );
}

/// Runs `program args`, panics with its output unless it succeeds; returns stdout.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The development rock: `$CLIENT_PROXY_ROCK`, else the one `.rock` in target/rock/.
fn rock_path() -> PathBuf {
    artifact(
        "CLIENT_PROXY_ROCK",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rock"),
        "",
        ".rock",
        "make rock",
    )
}

/// A directory removed when dropped (unless CLIENT_PROXY_KEEP is set).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CLIENT_PROXY_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Registers the standard users, starts the server, and routes requests through the
/// proxy to an implementing resource; returns the log line saying which library loaded.
async fn route_a_request(prosody: &mut Prosody) -> String {
    for user in [TARGET_USER, "user"] {
        prosody.register(user, PASSWORD);
    }
    prosody.start();
    let mut service = implementer(prosody, "installed").await;
    let mut r = requester(prosody, "abc").await;
    wait_routable(&mut r, PROXY, &["installed"]).await;
    let answer = r
        .must_request(
            get(PROXY, "after-install", test_payload("after-install")),
            ANSWER,
        )
        .await;
    assert_eq!(
        answered_by(&answer).as_deref(),
        Some("installed"),
        "{}",
        iq_xml(&answer)
    );
    service.stop().await;
    r.close().await;
    prosody.assert_no_tracebacks();
    let lines = prosody
        .wait_log("Proxying proxy.localhost to service@localhost", 1, ANSWER)
        .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0].clone()
}

#[tokio::test]
async fn luarocks_install_into_a_tree_on_plugin_paths() {
    let rock = rock_path();
    let tree = TempDir(unique_dir());
    let out = Command::new("luarocks")
        .arg(format!("--lua-version={LUA_VERSION}"))
        .arg(format!("--tree={}", tree.0.display()))
        .arg("install")
        .arg(&rock)
        .output()
        .expect("run luarocks (is it installed?)");
    assert!(
        out.status.success(),
        "luarocks install {} failed:\n{}\n{}",
        rock.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let shim = tree
        .0
        .join(format!("share/lua/{LUA_VERSION}/mod_client_proxy.lua"));
    let library = tree
        .0
        .join(format!("lib/lua/{LUA_VERSION}/client_proxy.so"));
    assert!(shim.is_file(), "{} not installed", shim.display());
    assert!(library.is_file(), "{} not installed", library.display());
    assert_shipped_size(&library);

    // Only the tree: the usual plugins directory of the harness is not listed at all.
    let mut prosody = Prosody::without_module(
        &[ComponentSpec::new(PROXY, "service@localhost", &[])],
        &[format!(
            "plugin_paths = {{ {:?} }}",
            tree.0.display().to_string()
        )],
    );
    let line = route_a_request(&mut prosody).await;
    assert!(
        line.contains(&library.display().to_string()),
        "the shim did not load {}: {line}",
        library.display()
    );
}

/// `prosodyctl install <what>` (with `extra` arguments first) into a temp
/// installer_plugin_path, then a request routed; the shim must load the library of that
/// tree, which must be stripped. Returns the "Proxying" log line.
async fn prosodyctl_install(extra: &[&str], what: &str) -> String {
    // prosodyctl installs into installer_plugin_path, by default custom_plugins under the
    // data directory Prosody was built with (Debian: /var/lib/prosody/custom_plugins, not
    // under data_path), and Prosody adds it to its plugin paths: a temp dir here.
    let installed = TempDir(unique_dir());
    let tree = installed.0.join("custom_plugins");
    let mut prosody = Prosody::without_module(
        &[ComponentSpec::new(PROXY, "service@localhost", &[])],
        &[format!(
            "installer_plugin_path = {:?}",
            tree.display().to_string()
        )],
    );
    let mut args = vec!["install"];
    args.extend_from_slice(extra);
    args.push(what);
    let said = prosody.prosodyctl(&args);
    let library = tree.join(format!("lib/lua/{LUA_VERSION}/client_proxy.so"));
    assert!(
        tree.join(format!("share/lua/{LUA_VERSION}/mod_client_proxy.lua"))
            .is_file(),
        "prosodyctl install did not install the shim into {}:\n{said}",
        tree.display()
    );
    assert!(!prosody.dir().join("plugins/mod_client_proxy").exists());
    assert_shipped_size(&library);
    let line = route_a_request(&mut prosody).await;
    assert!(
        line.contains(&library.display().to_string()),
        "the shim did not load {}: {line}",
        library.display()
    );
    line
}

#[tokio::test]
async fn prosodyctl_install_of_the_rock() {
    prosodyctl_install(&[], &rock_path().display().to_string()).await;
}

#[tokio::test]
async fn prosodyctl_install_from_a_local_rocks_server() {
    // A rocks server is a directory of rocks with a manifest (luarocks-admin make-manifest).
    let server = TempDir(unique_dir());
    let rock = rock_path();
    fs::copy(&rock, server.0.join(rock.file_name().unwrap())).expect("copy the rock");
    let out = Command::new("luarocks-admin")
        .arg("make-manifest")
        .arg(&server.0)
        .output()
        .expect("run luarocks-admin");
    assert!(
        out.status.success(),
        "luarocks-admin make-manifest failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let option = format!("--server={}", server.0.display());
    prosodyctl_install(&[&option], "mod_client_proxy").await;
}

#[tokio::test]
async fn prosodyctl_install_of_the_release_rock() {
    let rock = release_rock_path();
    let line = prosodyctl_install(&[], &rock.display().to_string()).await;
    assert!(
        line.contains(&format!("(native core {VERSION}, ")),
        "the release rock's library is not version {VERSION}: {line}"
    );
}

#[tokio::test]
async fn debian_package_unpacked_into_a_throwaway_root() {
    let deb = deb_path();
    let field = |name: &str| {
        run(
            "dpkg-deb",
            &["--field".as_ref(), deb.as_os_str(), name.as_ref()],
        )
    };
    assert_eq!(field("Package").trim(), "prosody-mod-client-proxy");
    assert_eq!(field("Version").trim(), format!("{VERSION}-1"));
    let depends = field("Depends");
    assert!(
        depends.contains("prosody (>= 0.12)") && depends.contains("libc6"),
        "Depends: {depends}"
    );

    // dpkg -x unpacks the files without installing anything (no dpkg database, no scripts).
    let root = TempDir(unique_dir());
    run(
        "dpkg",
        &["-x".as_ref(), deb.as_os_str(), root.0.as_os_str()],
    );
    let modules = root.0.join("usr/lib/prosody/modules");
    let module = modules.join("mod_client_proxy");
    for file in [
        "mod_client_proxy.lua",
        "native.lib.lua",
        "compat.lib.lua",
        "outbox.lib.lua",
        "resources.lib.lua",
        "affinity.lib.lua",
        "roster.lib.lua",
        "shell.lib.lua",
        "hibernation.lib.lua",
        "client_proxy.so",
    ] {
        assert!(
            module.join(file).is_file(),
            "{file} not in {}",
            module.display()
        );
    }
    let library = module.join("client_proxy.so");
    assert_shipped_size(&library);
    let doc = root.0.join("usr/share/doc/prosody-mod-client-proxy");
    for file in ["copyright", "changelog.gz", "changelog.Debian.gz"] {
        assert!(doc.join(file).is_file(), "{file} not in {}", doc.display());
    }

    // Installed, the package's directory is /usr/lib/prosody/modules: the plugin directory
    // built into Debian's prosody (CFG_PLUGINDIR), which Prosody searches after
    // plugin_paths, for mod_<name>/mod_<name>.lua among others. The test cannot write
    // there, so the unpacked <root>/usr/lib/prosody/modules stands in for it as the only
    // plugin path: the same directory, searched the same way (util.pluginloader).
    let mut prosody = Prosody::without_module(
        &[ComponentSpec::new(PROXY, "service@localhost", &[])],
        &[format!(
            "plugin_paths = {{ {:?} }}",
            modules.display().to_string()
        )],
    );
    let line = route_a_request(&mut prosody).await;
    assert!(
        line.contains(&library.display().to_string()),
        "the shim did not load {}: {line}",
        library.display()
    );
    assert!(
        line.contains(&format!("(native core {VERSION}, ")),
        "the package's library is not version {VERSION}: {line}"
    );
}
