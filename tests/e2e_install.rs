//! End-to-end tests of the luarocks packaging: the binary rock that `make rock` builds
//! (`luarocks make --tree` on mod_client_proxy-dev-1.rockspec, which runs cargo, as the
//! README says; then `luarocks pack` from that tree) installed the ways an operator would,
//! then a request routed through a real Prosody:
//!
//! - `luarocks install --tree=<dir>` into a temp tree, and Prosody's `plugin_paths` pointed
//!   at that tree (Prosody looks for share/lua/5.x/mod_<name>.lua in each plugin path);
//! - `prosodyctl install <rock>` and `prosodyctl install --server=<dir> mod_client_proxy`
//!   (a local rocks server), which run luarocks into Prosody's own tree
//!   (installer_plugin_path), with no plugin path of ours at all.
//!
//! In both, the shim must find its library in lib/lua/5.x/ of the tree it was installed
//! into: the log line "Proxying ... (native core <version>, <library path>)" says which
//! file it loaded. Needs `make rock` first (or $CLIENT_PROXY_ROCK); `make test` does it.

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

/// The binary rock: `$CLIENT_PROXY_ROCK`, else the one `.rock` in target/rock/.
fn rock_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CLIENT_PROXY_ROCK").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rock");
    let rocks: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rock"))
                .collect()
        })
        .unwrap_or_default();
    match rocks.as_slice() {
        [one] => one.clone(),
        [] => panic!("no binary rock in {}: run `make rock` first", dir.display()),
        many => panic!("several rocks in {}: {many:?}", dir.display()),
    }
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
/// tree.
async fn prosodyctl_install(extra: &[&str], what: &str) {
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
    let line = route_a_request(&mut prosody).await;
    assert!(
        line.contains(&library.display().to_string()),
        "the shim did not load {}: {line}",
        library.display()
    );
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
