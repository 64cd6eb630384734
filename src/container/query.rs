//! What `keel ps` and `keel inspect` show of a container, as data: docker's `--filter`
//! (`name=`, `id=`, `status=`, `ancestor=`, `exited=`), a Go-template-like `--format`
//! subset (`{{.ID}}`, `{{.Names}}`, `{{.Image}}`, `{{.Status}}` … with `table`
//! headers, and `json`), and docker-like inspect JSON. Pure: no I/O, table-tested.
use serde_json::{json, Value};

use super::{ContainerConfig, ContainerState, Status};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error(
        "invalid --filter {0:?}: use KEY=VALUE with KEY one of name, id, status, ancestor, exited"
    )]
    BadFilter(String),
    #[error("invalid --filter status={0:?}: use created, running or exited")]
    BadStatus(String),
    #[error("--format {format:?}: unknown field {{{{.{field}}}}}; use ID, Names, Image, Command, CreatedAt, Status, State, Ports or Size")]
    BadField { format: String, field: String },
    #[error("--format {0:?}: a '{{{{' is not closed by '}}}}'")]
    Unclosed(String),
}

/// One `--filter KEY=VALUE`; several filters with the same key are alternatives, with
/// different keys all must hold (docker's semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Name(String),
    Id(String),
    Status(Status),
    Ancestor(String),
    Exited(i32),
}

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, QueryError> {
        let bad = || QueryError::BadFilter(s.to_string());
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        Ok(match k {
            "name" => Filter::Name(v.to_string()),
            "id" => Filter::Id(v.to_string()),
            "ancestor" => Filter::Ancestor(v.to_string()),
            "exited" => Filter::Exited(v.parse().map_err(|_| bad())?),
            "status" => Filter::Status(match v {
                "created" => Status::Created,
                "running" => Status::Running,
                "exited" => Status::Exited,
                _ => return Err(QueryError::BadStatus(v.to_string())),
            }),
            _ => return Err(bad()),
        })
    }

    fn key(&self) -> u8 {
        match self {
            Filter::Name(_) => 0,
            Filter::Id(_) => 1,
            Filter::Status(_) => 2,
            Filter::Ancestor(_) => 3,
            Filter::Exited(_) => 4,
        }
    }

    fn holds(&self, c: &ContainerConfig, s: &ContainerState) -> bool {
        match self {
            // docker matches names by substring and ids by prefix.
            Filter::Name(n) => c.name.contains(n.as_str()),
            Filter::Id(i) => c.id.starts_with(i.as_str()),
            Filter::Status(st) => s.status == *st,
            Filter::Ancestor(a) => c.image == *a || c.image_digest.to_string().contains(a),
            Filter::Exited(code) => s.status == Status::Exited && s.exit_code == Some(*code),
        }
    }
}

/// Whether `c` passes every filter key (any value of a repeated key).
pub fn matches(filters: &[Filter], c: &ContainerConfig, s: &ContainerState) -> bool {
    (0..5u8).all(|key| {
        let of_key: Vec<&Filter> = filters.iter().filter(|f| f.key() == key).collect();
        of_key.is_empty() || of_key.iter().any(|f| f.holds(c, s))
    })
}

/// docker's STATUS column: `Up`, `Exited (N)`, `Created`.
pub fn status_text(s: &ContainerState) -> String {
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => "Up".into(),
        Status::Exited => format!("Exited ({})", s.exit_code.unwrap_or(-1)),
    }
}

fn state_word(s: &ContainerState) -> &'static str {
    match s.status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Exited => "exited",
    }
}

pub fn ports_text(c: &ContainerConfig) -> String {
    c.ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip, p.host_port, p.container_port, p.proto
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value of a template field for one container.
fn field(name: &str, c: &ContainerConfig, s: &ContainerState) -> Option<String> {
    Some(match name {
        "ID" => c.id[..12.min(c.id.len())].to_string(),
        "Names" => c.name.clone(),
        "Image" => c.image.clone(),
        "Command" => format!("{:?}", c.command.join(" ")),
        "CreatedAt" => c.created.clone(),
        "Status" => status_text(s),
        "State" => state_word(s).to_string(),
        "Ports" => ports_text(c),
        "Size" => String::new(),
        _ => return None,
    })
}

/// A parsed `--format`: literal text and `{{.Field}}` placeholders; `table` prints a
/// header line made of the field names first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    pub fn parse(format: &str) -> Result<Template, QueryError> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim_start()),
            _ => (false, format),
        };
        // The shell hands `\t` through literally; docker expands it.
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(open) = rest.find("{{") {
            parts.push(Part::Text(rest[..open].to_string()));
            let close = rest[open..]
                .find("}}")
                .ok_or_else(|| QueryError::Unclosed(format.to_string()))?;
            let inner = rest[open + 2..open + close].trim();
            let name = inner.trim_start_matches('.');
            if field(name, &dummy_config(), &super::ContainerState::created()).is_none() {
                return Err(QueryError::BadField {
                    format: format.to_string(),
                    field: name.to_string(),
                });
            }
            parts.push(Part::Field(name.to_string()));
            rest = &rest[open + close + 2..];
        }
        parts.push(Part::Text(rest.to_string()));
        parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
        Ok(Template { table, parts })
    }

    /// The header line of a `table` template (docker's column titles).
    pub fn header(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Field(f) => match f.as_str() {
                    "ID" => "CONTAINER ID".into(),
                    "CreatedAt" => "CREATED AT".into(),
                    other => other.to_uppercase(),
                },
            })
            .collect()
    }

    pub fn render(&self, c: &ContainerConfig, s: &ContainerState) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Field(f) => field(f, c, s).unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) fn tests_config() -> ContainerConfig {
    dummy_config()
}

fn dummy_config() -> ContainerConfig {
    ContainerConfig {
        id: String::new(),
        name: String::new(),
        image: String::new(),
        image_digest: crate::digest::of_bytes(b""),
        command: vec![],
        created: String::new(),
        isolation: String::new(),
        storage_driver: String::new(),
        ports: vec![],
        volumes: vec![],
        stop_signal: None,
        auto_remove: false,
        runtime: None,
        env: vec![],
        workdir: None,
        user: None,
        hostname: None,
    }
}

/// One row of `keel ps --format json` (docker's field names).
pub fn ps_json(c: &ContainerConfig, s: &ContainerState) -> Value {
    json!({
        "ID": &c.id[..12.min(c.id.len())],
        "Names": c.name,
        "Image": c.image,
        "Command": c.command.join(" "),
        "CreatedAt": c.created,
        "Status": status_text(s),
        "State": state_word(s),
        "Ports": ports_text(c),
        // keel's own names, kept for scripts written against earlier versions.
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "command": c.command,
        "created": c.created,
        "status": s.status,
        "exit_code": s.exit_code,
        "pid": s.pid,
        "ports": c.ports,
    })
}

/// `keel inspect CONTAINER`: the fields of docker's container inspect that keel has.
pub fn inspect_json(c: &ContainerConfig, s: &ContainerState, extra: Value) -> Value {
    let ports: serde_json::Map<String, Value> = c
        .ports
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p.container_port, p.proto),
                json!([{"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}]),
            )
        })
        .collect();
    let mut v = json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Created": c.created,
        "Path": c.command.first(),
        "Args": c.command.get(1..).unwrap_or_default(),
        "Image": c.image_digest.to_string(),
        "Config": {"Image": c.image, "Cmd": c.command, "StopSignal": c.stop_signal},
        "State": {
            "Status": state_word(s),
            "Running": s.status == Status::Running,
            "Pid": s.pid.unwrap_or(0),
            "ExitCode": s.exit_code.unwrap_or(0),
            "StartedAt": s.started.clone().unwrap_or_default(),
            "FinishedAt": s.finished.clone().unwrap_or_default(),
        },
        "HostConfig": {"AutoRemove": c.auto_remove, "Isolation": c.isolation},
        "Driver": c.storage_driver,
        "NetworkSettings": {"Ports": ports},
        "Mounts": c.volumes.iter().map(|v| json!({"Type": "volume", "Name": v})).collect::<Vec<_>>(),
    });
    if let (Value::Object(dst), Value::Object(src)) = (&mut v, extra) {
        for (k, val) in src {
            match (dst.get_mut(&k), val) {
                (Some(Value::Object(d)), Value::Object(s)) => d.extend(s),
                (_, val) => {
                    dst.insert(k, val);
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, image: &str) -> ContainerConfig {
        ContainerConfig {
            id: format!("{name:a<64}").replace(|ch: char| !ch.is_ascii_hexdigit(), "b"),
            name: name.into(),
            image: image.into(),
            command: vec!["sleep".into(), "9".into()],
            ..dummy_config()
        }
    }

    fn st(status: Status, code: Option<i32>) -> ContainerState {
        ContainerState {
            status,
            exit_code: code,
            ..ContainerState::created()
        }
    }

    #[test]
    fn filters_combine_like_docker() {
        let web = c("web", "bb");
        let up = st(Status::Running, None);
        let gone = st(Status::Exited, Some(3));
        let f = |s: &[&str]| {
            s.iter()
                .map(|x| Filter::parse(x).unwrap())
                .collect::<Vec<_>>()
        };
        for (filters, cs, want) in [
            (f(&["name=we"]), &up, true),
            (f(&["name=db"]), &up, false),
            (f(&["name=db", "name=web"]), &up, true),
            (f(&["name=web", "status=exited"]), &up, false),
            (f(&["status=exited", "exited=3"]), &gone, true),
            (f(&["exited=0"]), &gone, false),
            (f(&["ancestor=bb"]), &gone, true),
            (f(&["id=ba"]), &gone, false),
        ] {
            assert_eq!(matches(&filters, &web, cs), want, "{filters:?}");
        }
        assert!(Filter::parse("colour=red").is_err());
        assert!(Filter::parse("status=sleeping").is_err());
        assert!(Filter::parse("exited=x").is_err());
    }

    #[test]
    fn templates_render_fields_and_table_headers() {
        let web = c("web", "bb");
        let up = st(Status::Running, None);
        let t = Template::parse("{{.Names}} {{ .Image }} {{.Status}}").unwrap();
        assert!(!t.table);
        assert_eq!(t.render(&web, &up), "web bb Up");
        let t = Template::parse("table {{.ID}}\\t{{.Names}}").unwrap();
        assert!(t.table);
        assert_eq!(t.header(), "CONTAINER ID\tNAMES");
        assert_eq!(t.render(&web, &up), format!("{}\tweb", &web.id[..12]));
        assert_eq!(
            Template::parse("{{.State}}")
                .unwrap()
                .render(&web, &st(Status::Exited, Some(1))),
            "exited"
        );
        for bad in ["{{.Nope}}", "{{.Names"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inspect_has_docker_fields() {
        let web = c("web", "bb");
        let v = inspect_json(
            &web,
            &st(Status::Exited, Some(2)),
            json!({"State": {"Restarting": false}}),
        );
        assert_eq!(v["Name"], "/web");
        assert_eq!(v["State"]["ExitCode"], 2);
        assert_eq!(v["State"]["Status"], "exited");
        assert_eq!(v["State"]["Restarting"], false);
        assert_eq!(v["Config"]["Image"], "bb");
        assert_eq!(v["Args"], json!(["9"]));
    }
}
