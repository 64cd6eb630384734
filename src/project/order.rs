//! Dependency order of a project's images (`depends_on`), with cycle detection.
//!
//! Pure: works on the parsed [`Project`] only. The order is deterministic: dependencies
//! first, otherwise file order, so `keel build` and every generated glue file agree.
use super::{ImageSpec, Project, ProjectError, Result};

/// The images to build for `keel build` (all of them, `only = None`) or `keel build NAME`
/// (NAME and, before it, everything it depends on), dependencies first.
///
/// A cycle is an error naming it, e.g. `a -> b -> a`.
pub fn build_order<'p>(project: &'p Project, only: Option<&str>) -> Result<Vec<&'p ImageSpec>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'p>(
        p: &'p Project,
        i: usize,
        marks: &mut Vec<Mark>,
        stack: &mut Vec<usize>,
        out: &mut Vec<&'p ImageSpec>,
    ) -> Result<()> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let from = stack.iter().position(|&s| s == i).unwrap_or(0);
                let mut names: Vec<&str> = stack[from..]
                    .iter()
                    .map(|&s| p.images[s].name.as_str())
                    .collect();
                names.push(&p.images[i].name);
                return Err(ProjectError::Cycle {
                    file: p.file.clone(),
                    cycle: names.join(" -> "),
                });
            }
            Mark::New => {}
        }
        marks[i] = Mark::Active;
        stack.push(i);
        for dep in &p.images[i].depends_on {
            let j = index(p, dep)?;
            visit(p, j, marks, stack, out)?;
        }
        stack.pop();
        marks[i] = Mark::Done;
        out.push(&p.images[i]);
        Ok(())
    }
    fn index(p: &Project, name: &str) -> Result<usize> {
        p.image(name)
            .map(|img| p.images.iter().position(|i| std::ptr::eq(i, img)).unwrap())
    }

    let mut marks = vec![Mark::New; project.images.len()];
    let mut out = Vec::new();
    let roots: Vec<usize> = match only {
        Some(name) => vec![index(project, name)?],
        None => (0..project.images.len()).collect(),
    };
    for r in roots {
        visit(project, r, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn project(text: &str) -> Project {
        Project::parse(text, "keel.toml", Path::new("/p")).unwrap()
    }

    fn names(v: &[&ImageSpec]) -> String {
        v.iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn orders() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("", None, ""),
            ("[[image]]\nname='a'\n[[image]]\nname='b'\n", None, "a,b"),
            (
                "[[image]]\nname='app'\ndepends_on=['base']\n[[image]]\nname='base'\n",
                None,
                "base,app",
            ),
            (
                "[[image]]\nname='app'\ndepends_on=['base']\n[[image]]\nname='base'\n[[image]]\nname='x'\n",
                Some("app"),
                "base,app",
            ),
            (
                "[[image]]\nname='d'\ndepends_on=['b','c']\n[[image]]\nname='b'\ndepends_on=['a']\n[[image]]\nname='c'\ndepends_on=['a']\n[[image]]\nname='a'\n",
                None,
                "a,b,c,d",
            ),
            (
                "[[image]]\nname='a'\n[[image]]\nname='b'\n",
                Some("b"),
                "b",
            ),
        ];
        for (text, only, want) in cases {
            let p = project(text);
            assert_eq!(names(&build_order(&p, *only).unwrap()), *want, "{text}");
        }
    }

    #[test]
    fn cycles_are_named() {
        let cases = [
            (
                "[[image]]\nname='a'\ndepends_on=['b']\n[[image]]\nname='b'\ndepends_on=['a']\n",
                "a -> b -> a",
            ),
            (
                "[[image]]\nname='x'\ndepends_on=['a']\n[[image]]\nname='a'\ndepends_on=['b']\n[[image]]\nname='b'\ndepends_on=['c']\n[[image]]\nname='c'\ndepends_on=['a']\n",
                "a -> b -> c -> a",
            ),
        ];
        for (text, want) in cases {
            let e = build_order(&project(text), None).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.starts_with("keel.toml: image dependency cycle"), "{e}");
        }
    }

    #[test]
    fn unknown_image() {
        let p = project("[[image]]\nname='a'\n");
        let e = build_order(&p, Some("zz")).unwrap_err().to_string();
        assert_eq!(e, "keel.toml: no image named `zz`; images are: a");
    }
}
