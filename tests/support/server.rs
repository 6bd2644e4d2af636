//! A throwaway Prosody with the module installed: temp dir, free port, config (and the one
//! helper that edits it before start, [`Prosody::add_globals`]), users, start/stop/restart
//! by pid, and the log (for Lua tracebacks and operator-facing lines, polled with
//! [`Prosody::wait_log`]; never for debug wording, which may change).

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The domain of the test users.
pub const DOMAIN: &str = "localhost";

/// How long Prosody gets to open its c2s port.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long Prosody gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// One `Component "<host>" "client_proxy"` section: its host and raw option lines
/// (Lua, e.g. `target_address = "service@localhost"`).
#[derive(Clone, Debug)]
pub struct ComponentSpec {
    pub host: String,
    pub options: Vec<String>,
}

impl ComponentSpec {
    /// A component `host` proxying to `target` (a bare JID), with extra option lines.
    pub fn new(host: &str, target: &str, extra: &[&str]) -> Self {
        let mut options = vec![format!("target_address = {target:?}")];
        options.extend(extra.iter().map(|s| s.to_string()));
        ComponentSpec {
            host: host.to_string(),
            options,
        }
    }
}

/// Where a server listens and what it hosts. The default is the standard test server:
/// `VirtualHost "localhost"` on 127.0.0.1, no s2s. Federation tests (see
/// `support::federation`) run two servers on two loopback addresses with s2s on.
#[derive(Clone, Debug)]
pub struct Site {
    /// The VirtualHost (the domain of its users; [`Prosody::register`] registers there).
    pub domain: String,
    /// The loopback address every listener binds (`interfaces`).
    pub interface: String,
    /// With s2s: its port (s2s and dialback on, TLS off: `s2s_require_encryption =
    /// false`, `s2s_secure_auth = false`; the peer's names must resolve, see
    /// `support::federation`). None: `mod_s2s` disabled, as in the standard test config.
    pub s2s: Option<u16>,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            domain: DOMAIN.to_string(),
            interface: "127.0.0.1".to_string(),
            s2s: None,
        }
    }
}

/// A private Prosody instance: own temp dir, own port, own data. Stopped on drop (also
/// when the test panics; the log tail is printed then).
pub struct Prosody {
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    site: Site,
    child: Option<Child>,
}

/// Ports handed out in this process, never handed out twice (tests run in parallel).
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that was free a moment ago and was not handed out before in this
/// process (servers and their extra listeners share the one set).
pub fn free_port() -> u16 {
    free_port_at("127.0.0.1")
}

/// Like [`free_port`], free on the loopback address `ip` (e.g. "127.0.0.2"); the ports
/// handed out are one set for all addresses.
pub fn free_port_at(ip: &str) -> u16 {
    let mut used = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
        let port = listener.local_addr().expect("local_addr").port();
        if used.insert(port) {
            return port;
        }
    }
}

/// A new empty directory under the system temp dir, named after this process and a counter.
pub fn unique_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "client-proxy-e2e-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        nanos
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The built native library: `$CLIENT_PROXY_SO`, else target/release/libclient_proxy.so.
pub fn library_path() -> PathBuf {
    match std::env::var_os("CLIENT_PROXY_SO") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libclient_proxy.so"),
    }
}

/// The Lua shim: `$CLIENT_PROXY_LUA`, else lua/mod_client_proxy.lua in the source tree.
pub fn shim_path() -> PathBuf {
    match std::env::var_os("CLIENT_PROXY_LUA") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("lua/mod_client_proxy.lua"),
    }
}

/// The `*.lib.lua` files the shim loads with `module:require`: those beside `shim`, or,
/// when there are none, those in lua/ of the source tree.
pub fn shim_libraries(shim: &Path) -> Vec<PathBuf> {
    let list = |dir: &Path| -> Vec<PathBuf> {
        let mut libs: Vec<PathBuf> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.to_string_lossy().ends_with(".lib.lua"))
                    .collect()
            })
            .unwrap_or_default();
        libs.sort();
        libs
    };
    let beside = list(shim.parent().unwrap_or(Path::new(".")));
    if !beside.is_empty() {
        return beside;
    }
    list(&Path::new(env!("CARGO_MANIFEST_DIR")).join("lua"))
}

/// Asks Linux to SIGTERM the server when the thread that started it ends, so that a test
/// process killed from outside (a CI timeout, Ctrl-C) leaves no server running. Normally
/// [`Prosody`]'s drop stops it first.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // the test harness's one system call; the library's rule is src/'s
fn die_with_parent(command: &mut Command) {
    use std::os::raw::{c_int, c_ulong};
    use std::os::unix::process::CommandExt;
    extern "C" {
        fn prctl(option: c_int, arg2: c_ulong, ...) -> c_int;
    }
    const PR_SET_PDEATHSIG: c_int = 1;
    const SIGTERM: c_ulong = 15;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and only changes the child.
    unsafe {
        command.pre_exec(|| {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Escapes a string for a Lua double-quoted literal.
fn lua_str(s: &str) -> String {
    format!("{s:?}")
}

impl Prosody {
    /// Writes config and installs the module; does not start (see [`Prosody::start`]).
    pub fn new(components: &[ComponentSpec]) -> Prosody {
        let prosody = Prosody::without_module(components, &[]);
        prosody.install_module();
        prosody
    }

    /// Writes config with `global` option lines after the usual ones (a `plugin_paths`
    /// line replaces the usual one), and installs nothing: for tests that install the
    /// module themselves (luarocks, `prosodyctl install`). Does not start.
    pub fn without_module(components: &[ComponentSpec], global: &[String]) -> Prosody {
        Prosody::configure(&Site::default(), components, global)
    }

    /// Writes config for `site` (its VirtualHost, interface and s2s) with the module
    /// installed; does not start.
    pub fn at_site(site: &Site, components: &[ComponentSpec]) -> Prosody {
        let prosody = Prosody::configure(site, components, &[]);
        prosody.install_module();
        prosody
    }

    fn configure(site: &Site, components: &[ComponentSpec], global: &[String]) -> Prosody {
        let dir = unique_dir();
        let port = free_port_at(&site.interface);
        for sub in ["data", "plugins", "certs"] {
            fs::create_dir_all(dir.join(sub)).expect("create temp subdir");
        }
        let p = |name: &str| lua_str(&dir.join(name).to_string_lossy());
        let mut cfg = String::new();
        cfg += "-- Throwaway config written by tests/support (mod_client_proxy).\n";
        cfg += "run_as_root = true\n";
        cfg += "daemonize = false\n";
        cfg += &format!("data_path = {}\n", p("data"));
        cfg += &format!("pidfile = {}\n", p("prosody.pid"));
        cfg += &format!("admin_socket = {}\n", p("prosody.sock"));
        cfg += &format!("certificates = {}\n", p("certs"));
        cfg += &format!("interfaces = {{ {} }}\n", lua_str(&site.interface));
        cfg += &format!("c2s_ports = {{ {port} }}\n");
        cfg += "c2s_require_encryption = false\n";
        cfg += "allow_unencrypted_plain_auth = true\n";
        cfg += "authentication = \"internal_plain\"\n";
        match &site.s2s {
            None => {
                cfg += "modules_disabled = { \"s2s\", \"tls\" }\n";
                cfg += "modules_enabled = { \"roster\", \"saslauth\", \"disco\", \"ping\" }\n";
            }
            Some(s2s_port) => {
                cfg += "modules_disabled = { \"tls\" }\n";
                cfg += "modules_enabled = { \"roster\", \"saslauth\", \"disco\", \"ping\", \"dialback\" }\n";
                cfg += &format!("s2s_ports = {{ {s2s_port} }}\n");
                cfg += "s2s_require_encryption = false\n";
                cfg += "s2s_secure_auth = false\n";
            }
        }
        cfg += &format!("log = {{ debug = {} }}\n", p("prosody.log"));
        if !global.iter().any(|line| line.starts_with("plugin_paths")) {
            cfg += &format!("plugin_paths = {{ {} }}\n", p("plugins"));
        }
        for line in global {
            cfg += &format!("{line}\n");
        }
        cfg += &format!("\nVirtualHost {}\n", lua_str(&site.domain));
        for c in components {
            cfg += &format!("\nComponent {} \"client_proxy\"\n", lua_str(&c.host));
            for line in &c.options {
                cfg += &format!("    {line}\n");
            }
        }
        let config = dir.join("prosody.cfg.lua");
        fs::write(&config, cfg).expect("write prosody config");
        Prosody {
            dir,
            config,
            port,
            site: site.clone(),
            child: None,
        }
    }

    /// Copies the shim and the built library into `<dir>/plugins/mod_client_proxy/`.
    fn install_module(&self) {
        let so = library_path();
        if !so.is_file() {
            panic!(
                "native library {} not found: run `make build` first (or set CLIENT_PROXY_SO)",
                so.display()
            );
        }
        let target = self.dir.join("plugins/mod_client_proxy");
        fs::create_dir_all(&target).expect("create plugin dir");
        let shim = shim_path();
        fs::copy(&shim, target.join("mod_client_proxy.lua")).expect("copy the Lua shim");
        // The shim's libraries (`module:require "native"` and the others): from beside the
        // shim, else (a copy of the shim given as $CLIENT_PROXY_LUA) from lua/ of the tree.
        for lib in shim_libraries(&shim) {
            let name = lib.file_name().expect("a file name");
            fs::copy(&lib, target.join(name))
                .unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
        }
        // Write to a temp name and rename: never overwrite a .so in place.
        let tmp = target.join("client_proxy.so.tmp");
        fs::copy(&so, &tmp).expect("copy the native library");
        fs::rename(&tmp, target.join("client_proxy.so")).expect("rename the native library");
    }

    /// `user@localhost` as a string.
    pub fn jid(user: &str) -> String {
        format!("{user}@{DOMAIN}")
    }

    /// The temp dir (config, data, log, plugins).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The c2s port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `<interface>:<port>` (127.0.0.1 unless the site says otherwise), for [`client::Xmpp::login`].
    pub fn addr(&self) -> String {
        format!("{}:{}", self.site.interface, self.port)
    }

    /// Where it listens and what it hosts.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// Creates an account on the site's domain with `prosodyctl register` (works with the
    /// server stopped or running).
    pub fn register(&self, user: &str, password: &str) {
        self.prosodyctl(&["register", user, &self.site.domain, password]);
    }

    /// Runs `prosodyctl --config <this config> <args>` in the server's directory; panics
    /// with its output when it fails. Returns stdout and stderr.
    pub fn prosodyctl(&self, args: &[&str]) -> String {
        let out = Command::new("prosodyctl")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run prosodyctl");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            panic!(
                "prosodyctl {} failed ({}):\n{text}",
                args.join(" "),
                out.status
            );
        }
        text
    }

    /// Starts `prosody -F` and waits until the c2s port accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "Prosody is already running");
        // The log is appended to across restarts: only look at what this start writes.
        let log_offset = self.log_text().len();
        let ip = self.site.interface.clone();
        let listening = format!("Activated service 'c2s' on [{ip}]:{}", self.port);
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("console.txt"))
            .expect("open console.txt");
        let mut command = Command::new("prosody");
        command
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup console"))
            .stderr(console);
        die_with_parent(&mut command);
        let child = command.spawn().expect("spawn prosody (is it installed?)");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "prosody exited during startup ({status}); console:\n{}\nlog tail:\n{}",
                    self.console_text(),
                    self.log_tail(40)
                );
            }
            let log = self
                .log_text()
                .get(log_offset..)
                .unwrap_or_default()
                .to_string();
            if log.contains("Failed to open server port") || log.contains("Address already in use")
            {
                self.stop();
                panic!(
                    "prosody could not bind port {}; log tail:\n{}",
                    self.port,
                    self.log_tail(40)
                );
            }
            // Listening, and the log shows our own server got there (not another one's port).
            if TcpStream::connect((ip.as_str(), self.port)).is_ok() && log.contains(&listening) {
                return;
            }
            if started.elapsed() > START_TIMEOUT {
                self.stop();
                panic!(
                    "prosody did not open port {} within {:?}; console:\n{}\nlog tail:\n{}",
                    self.port,
                    START_TIMEOUT,
                    self.console_text(),
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Registers the given users (before start) and starts.
    pub fn start_with_users(components: &[ComponentSpec], users: &[(&str, &str)]) -> Prosody {
        let mut prosody = Prosody::new(components);
        for (user, password) in users {
            prosody.register(user, password);
        }
        prosody.start();
        prosody
    }

    /// Is the server process running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server: SIGTERM to its pid, wait, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops and starts again with the same config and data.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// The whole debug log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("prosody.log")).unwrap_or_default()
    }

    /// What prosody printed on stdout/stderr.
    pub fn console_text(&self) -> String {
        fs::read_to_string(self.dir.join("console.txt")).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Adds global `modules` to `modules_enabled` and global option `lines` (Lua) to the
    /// written config; call before [`Prosody::start`] (or restart afterwards). Panics if
    /// the config does not look as [`Prosody::without_module`] writes it.
    pub fn add_globals(&self, modules: &[&str], lines: &[String]) {
        let cfg = fs::read_to_string(&self.config).expect("read the prosody config");
        let marker = "modules_enabled = { ";
        assert!(cfg.contains(marker), "no `{marker}` in the config:\n{cfg}");
        let added: String = modules.iter().map(|m| format!("{m:?}, ")).collect();
        let cfg = cfg.replacen(marker, &format!("{marker}{added}"), 1);
        let at = cfg
            .find("\nVirtualHost ")
            .unwrap_or_else(|| panic!("no VirtualHost in the config:\n{cfg}"));
        let globals: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let cfg = format!("{}{globals}{}", &cfg[..at], &cfg[at..]);
        fs::write(&self.config, cfg).expect("write the prosody config");
    }

    /// Appends `text` (Lua) at the end of the written config, after the VirtualHost and the
    /// components: e.g. another `Component` section. Call before [`Prosody::start`].
    pub fn add_section(&self, text: &str) {
        let mut cfg = fs::read_to_string(&self.config).expect("read the prosody config");
        cfg += "\n";
        cfg += text;
        cfg += "\n";
        fs::write(&self.config, cfg).expect("write the prosody config");
    }

    /// Polls (bounded by `wait`) until the log has at least `count` lines containing
    /// `needle`; returns those lines. For operator-facing lines (info, warn, error) only.
    pub async fn wait_log(&self, needle: &str, count: usize, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        loop {
            let lines = self.log_lines(needle);
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} log line(s) with {needle:?} after {wait:?}, expected {count}; log tail:\n{}",
                lines.len(),
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Prosody version the server logged at start ("Hello and welcome to Prosody
    /// version 13.0.1"), e.g. "13.0.1"; None before a start. (Never `prosody --version`:
    /// Prosody ignores the flag and starts.)
    pub fn version(&self) -> Option<String> {
        self.log_lines("Hello and welcome to Prosody version ")
            .last()
            .and_then(|l| l.split("Prosody version ").nth(1))
            .map(|v| v.trim().to_string())
    }

    /// Number of log lines containing "Traceback" (Lua errors in handlers).
    pub fn traceback_count(&self) -> usize {
        self.log_lines("Traceback").len()
    }

    /// Panics (with the log lines around them) if the log has any Traceback.
    pub fn assert_no_tracebacks(&self) {
        let n = self.traceback_count();
        if n > 0 {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let first = lines
                .iter()
                .position(|l| l.contains("Traceback"))
                .unwrap_or(0);
            let from = first.saturating_sub(5);
            let to = (first + 25).min(lines.len());
            panic!(
                "{n} Traceback line(s) in the Prosody log; the first:\n{}",
                lines[from..to].join("\n")
            );
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() || std::env::var_os("CLIENT_PROXY_KEEP").is_some() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "---- Prosody log tail ({}) ----\n{}\n---- end of log tail; files kept in {} ----",
                self.dir.join("prosody.log").display(),
                self.log_tail(60),
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
