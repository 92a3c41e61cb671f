//! Where the agent learns who it is and whom to talk to: the kernel command
//! line the server's iPXE script wrote (`baas.server=URL baas.mac=MAC
//! baas.token=SECRET`), or, for tests and manual runs, a TOML or JSON file.
//! Nothing is baked into the management OS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baas_core::model::{DiskSelector, MacAddress};
use baas_core::{Error, Result};
use serde::Deserialize;

/// The agent's identity and server.
#[derive(Clone)]
pub struct Config {
    /// The server's base URL.
    pub server: String,
    /// The MAC of the NIC the machine PXE-booted with: its identity.
    pub mac: MacAddress,
    /// The machine's credential for this boot.
    pub token: String,
    /// Root of the `/sys`, `/proc` and `/dev` trees to read (tests point it
    /// at a fake tree); `/` when absent.
    pub root: Option<PathBuf>,
    /// Disk selectors mapped straight to files or devices (tests); these
    /// win over resolving against `/sys`.
    pub disks: Vec<(DiskSelector, PathBuf)>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("mac", &self.mac)
            .field("root", &self.root)
            .field("disks", &self.disks)
            .finish_non_exhaustive()
    }
}

/// The file form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: String,
    mac: String,
    token: String,
    root: Option<PathBuf>,
    #[serde(default)]
    disks: BTreeMap<String, PathBuf>,
}

/// Splits a kernel command line into words, honouring double quotes as the
/// kernel does (`key="a b"`).
fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

impl Config {
    /// From a kernel command line: `baas.server=`, `baas.mac=` and
    /// `baas.token=` are required; other words are ignored.
    pub fn from_cmdline(cmdline: &str) -> Result<Config> {
        let (mut server, mut mac, mut token) = (None, None, None);
        for w in words(cmdline) {
            if let Some((k, v)) = w.split_once('=') {
                match k {
                    "baas.server" => server = Some(v.to_string()),
                    "baas.mac" => mac = Some(v.to_string()),
                    "baas.token" => token = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        let missing = |k: &str| {
            Error::invalid(
                k,
                format!(
                    "the kernel command line has no {k}= (the server's boot script puts it there)"
                ),
            )
        };
        Config::checked(
            server.ok_or_else(|| missing("baas.server"))?,
            &mac.ok_or_else(|| missing("baas.mac"))?,
            token.ok_or_else(|| missing("baas.token"))?,
            None,
            BTreeMap::new(),
        )
    }

    /// From a TOML (`.toml`) or JSON (`.json`) file with `server`, `mac`,
    /// `token` and optionally `root` and `disks` (selector = path).
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("config", format!("cannot read {}", path.display())).with_source(e)
        })?;
        let json = path.extension().is_some_and(|e| e == "json")
            || (path.extension().is_none_or(|e| e != "toml") && text.trim_start().starts_with('{'));
        let file: FileConfig = if json {
            serde_json::from_str(&text)
                .map_err(|e| Error::invalid("config", format!("{}: {e}", path.display())))?
        } else {
            toml::from_str(&text)
                .map_err(|e| Error::invalid("config", format!("{}: {e}", path.display())))?
        };
        Config::checked(file.server, &file.mac, file.token, file.root, file.disks)
    }

    fn checked(
        server: String,
        mac: &str,
        token: String,
        root: Option<PathBuf>,
        disks: BTreeMap<String, PathBuf>,
    ) -> Result<Config> {
        let server = server.trim().to_string();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(Error::invalid(
                "server",
                format!("{server:?} is not an http:// or https:// URL"),
            ));
        }
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(Error::invalid("token", "must not be empty"));
        }
        let disks = disks
            .into_iter()
            .map(|(sel, path)| Ok((sel.parse::<DiskSelector>()?, path)))
            .collect::<Result<_>>()?;
        Ok(Config {
            server,
            mac: mac.parse()?,
            token,
            root,
            disks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_command_line_gives_server_mac_and_token() {
        let c = Config::from_cmdline(
            "BOOT_IMAGE=/vmlinuz quiet console=ttyS0,115200 baas.server=http://10.0.2.2:4848 \
             baas.mac=52-54-00-12-34-56 baas.token=baas_abc \"other=a b\"\n",
        )
        .expect("config");
        assert_eq!(c.server, "http://10.0.2.2:4848");
        assert_eq!(c.mac.to_string(), "52:54:00:12:34:56");
        assert_eq!(c.token, "baas_abc");
        assert!(c.root.is_none() && c.disks.is_empty());
        assert!(
            !format!("{c:?}").contains("baas_abc"),
            "Debug hides the token"
        );
        let q =
            Config::from_cmdline("baas.server=\"http://h:1\" baas.mac=525400123456 baas.token=t")
                .expect("quoted");
        assert_eq!(q.server, "http://h:1");
    }

    #[test]
    fn a_missing_or_bad_key_is_named() {
        let e =
            Config::from_cmdline("baas.mac=52:54:00:12:34:56 baas.token=t").expect_err("no server");
        assert!(e.message().contains("baas.server"), "{}", e.message());
        let e = Config::from_cmdline("baas.server=http://h baas.token=t").expect_err("no mac");
        assert!(e.message().contains("baas.mac"));
        let e = Config::from_cmdline("baas.server=http://h baas.mac=zz baas.token=t")
            .expect_err("bad mac");
        assert_eq!(e.field(), Some("mac"));
        let e = Config::from_cmdline("baas.server=h:1 baas.mac=52:54:00:12:34:56 baas.token=t")
            .expect_err("bad url");
        assert_eq!(e.field(), Some("server"));
        assert!(Config::from_cmdline("").is_err());
    }

    #[test]
    fn config_files_in_toml_and_json() {
        let dir = tempfile::tempdir().expect("dir");
        let t = dir.path().join("agent.toml");
        std::fs::write(
            &t,
            "server = \"http://127.0.0.1:1\"\nmac = \"52:54:00:12:34:56\"\ntoken = \"x\"\nroot = \"/tmp/fake\"\n[disks]\n\"first\" = \"/tmp/disk.img\"\n\"serial:S1#2\" = \"/tmp/p2.img\"\n",
        )
        .expect("write");
        let c = Config::from_file(&t).expect("toml");
        assert_eq!(c.disks.len(), 2);
        assert_eq!(c.root.as_deref(), Some(Path::new("/tmp/fake")));
        let j = dir.path().join("agent.json");
        std::fs::write(
            &j,
            r#"{"server": "http://127.0.0.1:1", "mac": "52:54:00:12:34:56", "token": "x", "disks": {"/dev/nvme0n1": "/tmp/d"}}"#,
        )
        .expect("write");
        let c = Config::from_file(&j).expect("json");
        assert_eq!(c.disks[0].0.to_string(), "/dev/nvme0n1");
        std::fs::write(
            &j,
            r#"{"server": "http://h", "mac": "52:54:00:12:34:56", "token": "x", "tokn": 1}"#,
        )
        .expect("write");
        assert!(Config::from_file(&j).is_err(), "unknown keys are refused");
        std::fs::write(&j, r#"{"server": "http://h", "mac": "52:54:00:12:34:56", "token": "x", "disks": {"sda": "/x"}}"#)
            .expect("write");
        assert!(Config::from_file(&j).is_err(), "bad selectors are refused");
        assert!(Config::from_file(&dir.path().join("missing.toml")).is_err());
    }
}
