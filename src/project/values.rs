//! Control characters in keel.toml: every key and string value reaches generated glue
//! (keel.mk, SConscript, Jenkinsfile, unit files), where a newline ends a make rule or a
//! shell command and starts the attacker's next one. Escaping each target syntax is each
//! adapter's job; refusing control characters up front, with the key and line, closes the
//! whole class. Pure: text in, the first offending key out.
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// The first key or string value holding an ASCII control character (tab included):
/// its dotted key (below `[[image]]`/`[env.NAME]` tables as written) and byte span.
pub fn first_control_character(text: &str) -> Option<(String, Range<usize>)> {
    // A file toml_edit cannot parse is reported by the serde parser, with its own line.
    let doc = ImDocument::parse(text).ok()?;
    walk_table(doc.as_table(), "")
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_control())
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(t: &Table, prefix: &str) -> Option<(String, Range<usize>)> {
    for (k, item) in t.iter() {
        let path = join(prefix, k);
        if has_control(k) {
            let span = t.key(k).and_then(|key| key.span()).unwrap_or(0..0);
            return Some((path, span));
        }
        let hit = match item {
            Item::Value(v) => walk_value(v, &path),
            Item::Table(t) => walk_table(t, &path),
            // `[[image]]` entries: keys inside are named as in the table (`tags`).
            Item::ArrayOfTables(a) => a.iter().find_map(|t| walk_table(t, "")),
            Item::None => None,
        };
        if hit.is_some() {
            return hit;
        }
    }
    None
}

fn walk_value(v: &Value, path: &str) -> Option<(String, Range<usize>)> {
    match v {
        Value::String(s) if has_control(s.value()) => {
            Some((path.to_string(), v.span().unwrap_or(0..0)))
        }
        Value::Array(a) => a.iter().find_map(|x| walk_value(x, path)),
        Value::InlineTable(t) => t.iter().find_map(|(k, x)| {
            let p = join(path, k);
            if has_control(k) {
                Some((p, t.key(k).and_then(|key| key.span()).unwrap_or(0..0)))
            } else {
                walk_value(x, &p)
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found_with_their_key() {
        let cases: &[(&str, Option<&str>)] = &[
            ("[[image]]\nname = \"a\"\ntags = [\"x\"]\n", None),
            (
                "[[image]]\nname = \"a\"\ntags = [\"x\\ny\"]\n",
                Some("tags"),
            ),
            (
                "[[image]]\nname = \"a\"\nargs = { V = \"1\\t2\" }\n",
                Some("args.V"),
            ),
            (
                "[env.dev]\nimage = \"b\"\nhome = \"\"\"/h\n\"\"\"\n",
                Some("env.dev.home"),
            ),
            (
                "[env.dev]\nimage = \"b\"\n[env.dev.env]\n\"K\\u0007\" = \"v\"\n",
                Some("env.dev.env.K\u{7}"),
            ),
            ("x = ", None),
        ];
        for (text, want) in cases {
            let got = first_control_character(text).map(|(k, _)| k);
            assert_eq!(got.as_deref(), *want, "{text}");
        }
        let (_, span) = first_control_character("a = 1\nb = \"x\\ny\"\n").unwrap();
        assert_eq!(&"a = 1\nb = \"x\\ny\"\n"[span], "\"x\\ny\"");
    }
}
