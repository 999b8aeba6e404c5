//! Support for the runbook tests (proxy, dns, fail2ban, firewall, brother, doctor): tenants of real containers
//! named `{tenant}-{role}` (tenant `gbot-...`), deleted on drop, and the services they need (Caddy as the caddy
//! user under a `proxy.service` unit, as `gbo install` runs it).
#![allow(dead_code)]

use std::time::Duration;

use lxd_client::{
    Client, CreateInstance, DeviceName, ExecOutput, ExecRequest, FileOptions, InstanceName, InstanceSource,
    ProxyAddress, ProxyDevice,
};

/// A tenant made of hand-built containers, deleted on drop.
pub struct Tenant {
    /// Tenant name (`gbot-<tag>-<pid>-<n>`).
    pub name: gbo_components::TenantName,
    /// The client.
    pub lxd: Client,
    containers: Vec<InstanceName>,
}

impl Tenant {
    /// A new tenant with no container yet.
    pub async fn new(tag: &str) -> Self {
        let lxd = gbo_tests::lxd().await;
        gbo_tests::require_test_image(&lxd).await;
        let name =
            gbo_components::TenantName::new(&gbo_tests::unique_name(tag)).expect("unique names are tenant names");
        Self { name, lxd, containers: Vec::new() }
    }

    /// `{tenant}-{role}` as an instance name.
    pub fn instance(&self, role: &str) -> InstanceName {
        InstanceName::new(format!("{}-{role}", self.name)).expect("valid test name")
    }

    /// Create and start `{tenant}-{role}` from the test image (no NIC), with `adjust` applied; waits for systemd.
    pub async fn container(
        &mut self,
        role: &str,
        adjust: impl FnOnce(CreateInstance) -> CreateInstance,
    ) -> InstanceName {
        let name = self.instance(role);
        let request = adjust(
            CreateInstance::container(name.clone(), InstanceSource::alias(gbo_tests::TEST_IMAGE))
                .config("user.gbo.test", "true"),
        )
        .start(true);
        self.containers.push(name.clone());
        self.lxd.create_instance(&request).await.unwrap_or_else(|e| panic!("creating {name}: {e}"));
        wait_for_systemd(&self.lxd, &name).await;
        name
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        for name in &self.containers {
            gbo_tests::delete_instance(name.as_str());
        }
    }
}

/// A host-bound TCP proxy device listening on 127.0.0.1:`host_port`, connecting to 127.0.0.1:`port` inside.
pub fn tcp_port(request: CreateInstance, device: &str, host_port: u16, port: u16) -> CreateInstance {
    let proxy = ProxyDevice::new(ProxyAddress::tcp("127.0.0.1", host_port), ProxyAddress::tcp("127.0.0.1", port));
    let name = DeviceName::new(device).expect("valid device name");
    let config = proxy.to_config(&name).expect("valid proxy device");
    request.device(&name, config)
}

/// Wait until systemd inside is up (at most 90 s).
pub async fn wait_for_systemd(lxd: &Client, name: &InstanceName) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let req = ExecRequest::new(["systemctl", "is-system-running", "--wait"]).timeout(Duration::from_secs(60));
        if let Ok(out) = lxd.exec_output(name, &req).await {
            let state = out.stdout_text();
            if state.contains("running") || state.contains("degraded") {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "systemd in {name} did not come up");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Run a shell script inside as root.
pub async fn sh(lxd: &Client, name: &InstanceName, script: &str) -> ExecOutput {
    let req = ExecRequest::new(["bash", "-c", script]).timeout(Duration::from_secs(120));
    match tokio::time::timeout(Duration::from_secs(150), lxd.exec_output(name, &req)).await {
        Ok(result) => result.unwrap_or_else(|e| panic!("exec of `{script}` in {name}: {e}")),
        Err(_) => panic!("exec of `{script}` in {name} hung for 150 s"),
    }
}

/// Run a shell script inside and insist it succeeds; returns stdout.
pub async fn sh_ok(lxd: &Client, name: &InstanceName, script: &str) -> String {
    let out = sh(lxd, name, script).await;
    assert!(out.success(), "`{script}` in {name} failed: {} {}", out.stdout_text(), out.stderr_text());
    out.stdout_text()
}

/// Write a file inside as root with `mode`.
pub async fn write(lxd: &Client, name: &InstanceName, path: &str, content: &str, mode: u32) {
    lxd.push_bytes(name, path, content.as_bytes().to_vec(), FileOptions::root(mode))
        .await
        .unwrap_or_else(|e| panic!("writing {path} in {name}: {e}"));
}

/// Read a file inside.
pub async fn read(lxd: &Client, name: &InstanceName, path: &str) -> String {
    String::from_utf8_lossy(
        &lxd.read_file(name, path).await.unwrap_or_else(|e| panic!("reading {path} in {name}: {e}")),
    )
    .into_owned()
}

/// The global block every test Caddyfile starts with (admin on loopback, explicit storage, no trust-store install).
pub const CADDY_GLOBAL: &str =
    "{\n\tadmin localhost:2019\n\tskip_install_trust\n\tstorage file_system {\n\t\troot /opt/gbo/data/caddy\n\t}\n}\n";

/// A Caddyfile with the global block, one `http://` site per host answering `site <host>`, and `tls internal`
/// HTTPS sites for `https_hosts`.
pub fn caddyfile(http_hosts: &[&str], https_hosts: &[&str]) -> String {
    let mut out = CADDY_GLOBAL.to_string();
    out.push_str("\n(gbo_access_log) {\n\tlog {\n\t\toutput file /opt/gbo/logs/access.log\n\t\tformat json\n\t}\n}\n");
    for host in http_hosts {
        out.push_str(&format!(
            "\n# role: test\nhttp://{host} {{\n\timport gbo_access_log\n\trespond \"site {host}\" 200\n}}\n"
        ));
    }
    for host in https_hosts {
        out.push_str(&format!(
            "\n{host} {{\n\timport gbo_access_log\n\ttls internal\n\trespond \"site {host}\" 200\n}}\n"
        ));
    }
    out
}

/// `proxy.service` as `gbo install` renders it: Caddy as the caddy user with the seed's config path.
pub const PROXY_UNIT: &str = "[Unit]\nDescription=Caddy reverse proxy (gbo proxy test)\n\n[Service]\nUser=caddy\nGroup=caddy\nEnvironment=HOME=/var/lib/caddy\n\
ExecStart=/usr/bin/caddy run --config /opt/gbo/conf/config --adapter caddyfile\n\
ExecReload=/usr/bin/caddy reload --config /opt/gbo/conf/config --adapter caddyfile --force\n\
AmbientCapabilities=CAP_NET_BIND_SERVICE\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n";

/// A proxy container for `tenant` publishing 80 and 443 on free loopback ports; Caddy running `config`.
/// Returns (instance, host port of 80, host port of 443).
pub async fn proxy_with_caddy(tenant: &mut Tenant, config: &str) -> (InstanceName, u16, u16) {
    let (http, https) = (gbo_tests::free_port(), gbo_tests::free_port());
    let name = tenant
        .container("proxy", |r| tcp_port(tcp_port(r, "gbo-port-http", http, 80), "gbo-port-https", https, 443))
        .await;
    let lxd = tenant.lxd.clone();
    sh_ok(&lxd, &name, "install -d -o caddy -g caddy /opt/gbo/data/caddy /var/lib/caddy && touch /opt/gbo/logs/access.log && chown caddy:caddy /opt/gbo/logs/access.log").await;
    lxd.push_bytes(&name, "/opt/gbo/conf/config", config.as_bytes().to_vec(), FileOptions::owned(1003, 1003, 0o640))
        .await
        .expect("pushing the Caddyfile");
    write(&lxd, &name, "/etc/systemd/system/proxy.service", PROXY_UNIT, 0o644).await;
    sh_ok(&lxd, &name, "systemctl daemon-reload && systemctl enable --now proxy.service").await;
    wait_for_caddy(&lxd, &name).await;
    (name, http, https)
}

/// Wait until Caddy's admin API answers inside (at most 30 s).
pub async fn wait_for_caddy(lxd: &Client, name: &InstanceName) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !sh(lxd, name, "exec 3<>/dev/tcp/127.0.0.1/2019").await.success() {
        if std::time::Instant::now() > deadline {
            let log = sh(lxd, name, "journalctl -u proxy.service --no-pager | tail -20").await.stdout_text();
            panic!("Caddy did not start in {name}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `MainPID` of a unit inside.
pub async fn main_pid(lxd: &Client, name: &InstanceName, unit: &str) -> u32 {
    sh_ok(lxd, name, &format!("systemctl show --property=MainPID --value {unit}")).await.trim().parse().expect("a pid")
}

/// GET `http://127.0.0.1:<port>/` with `Host: host`; (status, body) or the error.
pub async fn http_get(port: u16, host: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let response =
        client.get(format!("http://127.0.0.1:{port}/")).header("Host", host).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.map_err(|e| e.to_string())?))
}
