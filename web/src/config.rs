//! Settings: command-line flags, else environment variables, else defaults.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// A libpq-style connection string (`host=... port=... dbname=...`) or URL.
    pub database: String,
    pub listen: SocketAddr,
    pub pool_size: usize,
    pub statement_timeout: Duration,
    /// How long a request waits for a free connection before a 503.
    pub pool_wait: Duration,
    pub max_body: usize,
}

pub const USAGE: &str = "usage: pg_clip-web [--database CONNINFO] [--listen ADDR:PORT] [--pool N] \
[--statement-timeout MS] [--max-body-mb N]
  --database           PG_CLIP_WEB_DATABASE, else built from PGHOST, PGPORT, PGUSER, PGDATABASE
  --listen             PG_CLIP_WEB_LISTEN, default 127.0.0.1:8717
  --pool               PG_CLIP_WEB_POOL, connections, default 4
  --statement-timeout  PG_CLIP_WEB_STATEMENT_TIMEOUT, milliseconds per statement, default 10000
  --max-body-mb        PG_CLIP_WEB_MAX_BODY_MB, largest request body, default 20";

/// The connection string from the libpq environment variables that are set.
fn from_pg_env(get: &dyn Fn(&str) -> Option<String>) -> String {
    [
        ("PGHOST", "host"),
        ("PGPORT", "port"),
        ("PGUSER", "user"),
        ("PGDATABASE", "dbname"),
        ("PGPASSWORD", "password"),
    ]
    .iter()
    .filter_map(|(var, key)| {
        get(var).map(|v| format!("{key}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
    })
    .collect::<Vec<_>>()
    .join(" ")
}

impl Config {
    pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let flag = |name: &str, var: &str| -> Result<Option<String>, String> {
            match args.iter().position(|a| a == name) {
                Some(i) => args.get(i + 1).cloned().map(Some).ok_or(format!("{name} needs a value")),
                None => Ok(env(var)),
            }
        };
        let number = |name: &str, v: Option<String>, default: u64| -> Result<u64, String> {
            v.map_or(Ok(default), |s| s.parse().map_err(|_| format!("{name}: not a number: {s}")))
        };
        for a in args.iter().filter(|a| a.starts_with("--")) {
            if !["--database", "--listen", "--pool", "--statement-timeout", "--max-body-mb"]
                .contains(&a.as_str())
            {
                return Err(format!("unknown option {a}"));
            }
        }
        let database = flag("--database", "PG_CLIP_WEB_DATABASE")?.unwrap_or_else(|| from_pg_env(env));
        let listen = flag("--listen", "PG_CLIP_WEB_LISTEN")?.unwrap_or_else(|| "127.0.0.1:8717".into());
        let listen = listen.parse().map_err(|_| format!("--listen: not an address:port: {listen}"))?;
        let pool_size = number("--pool", flag("--pool", "PG_CLIP_WEB_POOL")?, 4)?.clamp(1, 64) as usize;
        let timeout = number(
            "--statement-timeout",
            flag("--statement-timeout", "PG_CLIP_WEB_STATEMENT_TIMEOUT")?,
            10_000,
        )?;
        let max_body =
            number("--max-body-mb", flag("--max-body-mb", "PG_CLIP_WEB_MAX_BODY_MB")?, 20)?.clamp(1, 1024);
        Ok(Config {
            database,
            listen,
            pool_size,
            statement_timeout: Duration::from_millis(timeout.max(1)),
            pool_wait: Duration::from_secs(2),
            max_body: (max_body as usize) << 20,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_environment_and_defaults_fill_in() {
        let env = |k: &str| match k {
            "PGHOST" => Some("/tmp/it's".to_string()),
            "PGPORT" => Some("5433".to_string()),
            "PG_CLIP_WEB_POOL" => Some("8".to_string()),
            _ => None,
        };
        let c = Config::parse(&["--listen".into(), "127.0.0.1:9000".into()], &env).unwrap();
        assert_eq!(c.database, r"host='/tmp/it\'s' port='5433'");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.pool_size, 8);
        assert_eq!(c.statement_timeout, Duration::from_secs(10));
        assert!(Config::parse(&["--pool".into(), "many".into()], &env).is_err());
        assert!(Config::parse(&["--bogus".into()], &env).is_err());
    }
}
