//! The documentation (README.md and docs/**/*.md) stays true to the repository.
//!
//! A fenced code block that copies a repository file is marked by an HTML
//! comment on the line just before its opening fence:
//!
//! ````text
//! <!-- file: rooms-js/chat.js -->
//! ```js
//! ...the file, byte for byte...
//! ```
//! ````
//!
//! The path is relative to the repository root, whichever page holds the
//! listing. Each line of the block ends in a newline, so the block equals a
//! file that ends in exactly one newline; a file without a final newline
//! cannot be listed, and is reported as such. Indentation the opening fence
//! has (a listing inside a list item) is not part of the content.
//!
//! An unmarked block that opens with a comment naming `rooms-js/` is refused:
//! listings used to be written that way, and such a copy goes stale unchecked.
//!
//! Every relative link must name a file or directory of the repository, and a
//! `#fragment` on a link to a markdown page (or on a bare `#fragment`) must be
//! a heading of that page, with GitHub's slugs. Links to other sites are not
//! fetched.
//!
//! The checkers take the root as a parameter, so the tests at the bottom run
//! them against small repositories of their own and show that each problem is
//! caught.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// One markdown page, its path relative to the root (with `/`) and its text.
struct Page {
    path: String,
    text: String,
}

/// A fenced code block of a page.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// Its content lines, without the fences and the fence's indentation.
    content: Vec<String>,
    /// The path a `<!-- file: ... -->` marker just before the fence names.
    marker: Option<String>,
}

/// A page split into its code blocks and the lines outside them.
struct Parsed {
    blocks: Vec<Block>,
    /// (1-based line, text) of every line outside code blocks.
    prose: Vec<(usize, String)>,
    /// Problems of the page's structure: unclosed fences, stray markers.
    problems: Vec<String>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every `.md` under docs/, in a stable order.
fn pages(root: &Path) -> Vec<Page> {
    let mut paths = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read docs/").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| Page {
            text: fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
            path: relative(root, &path),
        })
        .collect()
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// The fence a line opens or closes: its indentation, character and length.
fn fence(line: &str) -> Option<(usize, char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let run = rest.len() - rest.trim_start_matches(ch).len();
    (run >= 3).then_some((indent, ch, run))
}

/// The path of a `<!-- file: PATH -->` line; `Some(Err)` for a line that
/// looks like a marker but is not one, so a typo cannot switch a check off.
fn marker(line: &str) -> Option<Result<String, String>> {
    let inner = line.trim().strip_prefix("<!--")?.trim_start();
    let after = inner.strip_prefix("file")?;
    let parsed = after
        .trim_start()
        .strip_prefix(':')
        .and_then(|rest| rest.trim_end().strip_suffix("-->"))
        .map(str::trim)
        .filter(|path| !path.is_empty() && !path.contains(char::is_whitespace));
    Some(parsed.map(str::to_owned).ok_or_else(|| {
        format!(
            "malformed marker {:?}: write <!-- file: path/to/file -->",
            line.trim()
        )
    }))
}

fn parse(page: &Page) -> Parsed {
    let mut parsed = Parsed {
        blocks: Vec::new(),
        prose: Vec::new(),
        problems: Vec::new(),
    };
    // (fence indent, char, length, the block being read)
    let mut open: Option<(usize, char, usize, Block)> = None;
    // A marker waiting for the fence on the next line: (its line, path).
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in page.text.lines().enumerate() {
        let n = i + 1;
        if let Some((indent, ch, len, block)) = &mut open {
            let closes = fence(line).is_some_and(|(_, c, l)| c == *ch && l >= *len)
                && line.trim().chars().all(|c| c == *ch);
            if closes {
                let (_, _, _, block) = open.take().expect("open block");
                parsed.blocks.push(block);
            } else {
                let strip = line.len() - line.trim_start_matches(' ').len();
                block.content.push(line[strip.min(*indent)..].to_owned());
            }
            continue;
        }
        if let Some((indent, ch, len)) = fence(line) {
            let marker = pending.take().map(|(_, path)| path);
            open = Some((
                indent,
                ch,
                len,
                Block {
                    line: n,
                    content: Vec::new(),
                    marker,
                },
            ));
            continue;
        }
        if let Some((at, path)) = pending.take() {
            parsed.problems.push(format!(
                "{}:{at}: the marker for {path} is not on the line just before a code fence",
                page.path
            ));
        }
        match marker(line) {
            Some(Ok(path)) => pending = Some((n, path)),
            Some(Err(problem)) => parsed
                .problems
                .push(format!("{}:{n}: {problem}", page.path)),
            None => parsed.prose.push((n, line.to_owned())),
        }
    }
    if let Some((at, path)) = pending {
        parsed.problems.push(format!(
            "{}:{at}: the marker for {path} is not followed by a code fence",
            page.path
        ));
    }
    if let Some((_, _, _, block)) = open {
        parsed.problems.push(format!(
            "{}:{}: this code fence is never closed",
            page.path, block.line
        ));
    }
    parsed
}

/// A path inside the root, relative, without `..`: what a marker may name.
fn inside(path: &str) -> bool {
    let path = Path::new(path);
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Why a listing differs from its file, pointing at the first differing line.
fn difference(listing: &str, file: &[u8]) -> String {
    let file = String::from_utf8_lossy(file);
    if !file.is_empty() && !file.ends_with('\n') {
        return "the file has no final newline (a listing ends every line with one); \
                add one to the file"
            .to_owned();
    }
    let mut listed = listing.split_inclusive('\n');
    let mut actual = file.split_inclusive('\n');
    for n in 1.. {
        match (listed.next(), actual.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => {
                return format!(
                    "first difference at line {n}:\n    listing: {:?}\n    file:    {:?}",
                    a.trim_end_matches('\n'),
                    b.trim_end_matches('\n')
                );
            }
            (None, Some(b)) => {
                return format!(
                    "the listing stops after line {}; the file goes on with {:?}",
                    n - 1,
                    b.trim_end_matches('\n')
                );
            }
            (Some(a), None) => {
                return format!(
                    "the file has {} lines; the listing goes on with {:?}",
                    n - 1,
                    a.trim_end_matches('\n')
                );
            }
            (None, None) => break,
        }
    }
    "they differ".to_owned()
}

/// Marked listings that differ from (or name no) file, and unmarked
/// listings of room scripts.
fn listing_problems(root: &Path, page: &Page) -> Vec<String> {
    let parsed = parse(page);
    let mut problems = parsed.problems;
    for block in &parsed.blocks {
        let at = format!("{}:{}", page.path, block.line);
        let Some(path) = &block.marker else {
            let first = block.content.first().map(|l| l.trim()).unwrap_or("");
            let comment = first.starts_with("//") || first.starts_with("/*");
            if comment && first.contains("rooms-js/") {
                problems.push(format!(
                    "{at}: this listing opens with {first:?} but has no marker; if it copies \
                     a file, put <!-- file: rooms-js/... --> on the line before the fence"
                ));
            }
            continue;
        };
        if !inside(path) {
            problems.push(format!(
                "{at}: the marker names {path}, which is not a relative path inside the \
                 repository (no leading /, no ..)"
            ));
            continue;
        }
        let file = root.join(path);
        if !file.is_file() {
            problems.push(format!(
                "{at}: the marker names {path}, which is not a file"
            ));
            continue;
        }
        let expected = fs::read(&file).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let listing: String = block.content.iter().map(|l| format!("{l}\n")).collect();
        if listing.as_bytes() != expected {
            problems.push(format!(
                "{at}: the listing of {path} is not a copy of the file: {}\n  \
                 copy the file into the listing again",
                difference(&listing, &expected)
            ));
        }
    }
    problems
}

/// Drops inline code spans, in which brackets and parentheses are not links.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        let delimiter = &rest[start..start + ticks];
        let after = &rest[start + ticks..];
        match after.find(delimiter) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                out.push_str(&rest[start..]);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of inline links `[text](target "title")` and of reference
/// definitions `[label]: target` on one line of prose.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let trimmed = line.trim_start();
    if trimmed.starts_with('[')
        && let Some(end) = trimmed.find("]:")
        && let Some(target) = trimmed[end + 2..].split_whitespace().next()
    {
        targets.push(target.to_owned());
    }
    let mut rest = line.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let end = after.find(')').unwrap_or(after.len());
        if let Some(target) = after[..end].split_whitespace().next() {
            targets.push(target.trim_matches(['<', '>']).to_owned());
        }
        rest = &after[end..];
    }
    targets
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, other
/// punctuation dropped; a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> Vec<String> {
    let page = Page {
        path: String::new(),
        text: text.to_owned(),
    };
    let mut seen: Vec<String> = Vec::new();
    let mut anchors = Vec::new();
    for (_, line) in parse(&page).prose {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let title = line[hashes..].trim().trim_end_matches('#').trim();
        // A link in a heading shows its text only.
        let mut text = String::new();
        let mut rest = title;
        while let Some(start) = rest.find("](") {
            text.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            rest = &after[after.find(')').map_or(after.len(), |e| e + 1)..];
        }
        text.push_str(rest);
        let slug: String = text
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let repeats = seen.iter().filter(|s| **s == slug).count();
        anchors.push(if repeats == 0 {
            slug.clone()
        } else {
            format!("{slug}-{repeats}")
        });
        seen.push(slug);
    }
    anchors
}

/// Relative links that name nothing, or a heading their page does not have.
fn link_problems(root: &Path, page: &Page) -> Vec<String> {
    let dir = Path::new(&page.path).parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for (n, line) in parse(page).prose {
        for target in link_targets(&line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let at = format!("{}:{n}", page.path);
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let (shown, text) = if path.is_empty() {
                (page.path.clone(), Some(page.text.clone()))
            } else {
                // Resolve against the page's directory, without leaving the root.
                let mut resolved = PathBuf::new();
                let mut escapes = false;
                for part in dir.join(path).components() {
                    match part {
                        Component::ParentDir => escapes |= !resolved.pop(),
                        Component::Normal(p) => resolved.push(p),
                        _ => escapes = true,
                    }
                }
                let shown = relative(Path::new(""), &resolved);
                if escapes {
                    problems.push(format!("{at}: the link {target} leaves the repository"));
                    continue;
                }
                let file = root.join(&resolved);
                if !file.exists() {
                    problems.push(format!(
                        "{at}: the link {target} names {shown}, which does not exist"
                    ));
                    continue;
                }
                let markdown = file.is_file() && file.extension().is_some_and(|e| e == "md");
                (
                    shown,
                    markdown.then(|| fs::read_to_string(&file).unwrap_or_default()),
                )
            };
            if let (Some(fragment), Some(text)) = (fragment, text)
                && !anchors(&text).iter().any(|a| a == fragment)
            {
                problems.push(format!(
                    "{at}: the link {target} names #{fragment}, which is no heading of {shown}"
                ));
            }
        }
    }
    problems
}

fn report(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "\n{} problem(s) in the documentation:\n\n{}\n",
        problems.len(),
        problems.join("\n\n")
    );
}

#[test]
fn marked_listings_are_copies_of_their_files() {
    let root = repo_root();
    let pages = pages(&root);
    let marked: usize = pages
        .iter()
        .map(|page| {
            parse(page)
                .blocks
                .iter()
                .filter(|b| b.marker.is_some())
                .count()
        })
        .sum();
    assert!(
        marked > 0,
        "no marked listing found: is the marker syntax still <!-- file: ... -->?"
    );
    report(
        pages
            .iter()
            .flat_map(|page| listing_problems(&root, page))
            .collect(),
    );
}

#[test]
fn relative_links_resolve() {
    let root = repo_root();
    report(
        pages(&root)
            .iter()
            .flat_map(|page| link_problems(&root, page))
            .collect(),
    );
}

// The checkers against small repositories of their own: each problem is caught.

/// A scratch repository under cargo's per-test temp dir with these files.
fn scratch(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("docs-check")
        .join(name);
    let _ = fs::remove_dir_all(&root);
    for (path, text) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    root
}

fn page(path: &str, text: &str) -> Page {
    Page {
        path: path.to_owned(),
        text: text.to_owned(),
    }
}

const SCRIPT: &str =
    "// a: a room\nlet n = 0;\n\nexport function onMessage() {\n  return { n: ++n };\n}\n";

#[test]
fn an_exact_copy_passes_even_inside_a_list_item() {
    let root = scratch("exact", &[("rooms-js/a.js", SCRIPT)]);
    let indented: String = SCRIPT
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    let text = format!(
        "# A\n\n<!-- file: rooms-js/a.js -->\n```js\n{SCRIPT}```\n\n\
         - in a list:\n\n  <!-- file: rooms-js/a.js -->\n  ```js\n{indented}  ```\n"
    );
    let problems = listing_problems(&root, &page("docs/a.md", &text));
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_changed_listing_is_caught_at_its_first_difference() {
    let root = scratch("changed", &[("rooms-js/a.js", SCRIPT)]);
    let changed = SCRIPT.replace("++n", "n++");
    let text = format!("<!-- file: rooms-js/a.js -->\n```js\n{changed}```\n");
    let problems = listing_problems(&root, &page("README.md", &text));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("README.md:2: the listing of rooms-js/a.js"));
    assert!(
        problems[0].contains("first difference at line 5"),
        "{}",
        problems[0]
    );

    let short = "<!-- file: rooms-js/a.js -->\n```js\n// a: a room\nlet n = 0;\n```\n";
    let problems = listing_problems(&root, &page("README.md", short));
    assert!(problems[0].contains("the file goes on"), "{problems:?}");
}

#[test]
fn a_file_without_a_final_newline_is_reported_as_such() {
    let root = scratch("newline", &[("rooms-js/a.js", SCRIPT.trim_end())]);
    let text = format!("<!-- file: rooms-js/a.js -->\n```js\n{SCRIPT}```\n");
    let problems = listing_problems(&root, &page("README.md", &text));
    assert!(problems[0].contains("no final newline"), "{problems:?}");
}

#[test]
fn a_marker_naming_no_file_or_no_fence_is_caught() {
    let root = scratch("marker", &[("rooms-js/a.js", SCRIPT)]);
    let cases = [
        (
            "<!-- file: rooms-js/b.js -->\n```js\n```\n",
            "which is not a file",
        ),
        (
            "<!-- file: ../a.js -->\n```js\n```\n",
            "not a relative path inside",
        ),
        (
            "<!-- file: rooms-js/a.js -->\n\n```js\n```\n",
            "not on the line just before",
        ),
        (
            "<!-- file: rooms-js/a.js -->\n",
            "not followed by a code fence",
        ),
        (
            "<!-- file rooms-js/a.js -->\n```js\n```\n",
            "malformed marker",
        ),
        ("```js\nlet n;\n", "never closed"),
    ];
    for (text, expected) in cases {
        let problems = listing_problems(&root, &page("docs/a.md", text));
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{text:?}: expected {expected:?} in {problems:?}"
        );
    }
}

#[test]
fn an_unmarked_listing_of_a_room_script_is_caught() {
    let root = scratch("unmarked", &[("rooms-js/a.js", SCRIPT)]);
    for opening in ["// rooms-js/a.js — a room", "/* rooms-js/a.js */"] {
        let text = format!("# A\n\n```js\n{opening}\nlet n = 0;\n```\n");
        let problems = listing_problems(&root, &page("docs/a.md", &text));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("docs/a.md:3: this listing opens with"));
    }
    // A client listing that is no copy of a file is left alone.
    let text = "```js\nimport { Socket } from \"phoenix\";\n```\n";
    assert!(listing_problems(&root, &page("docs/a.md", text)).is_empty());
}

#[test]
fn dead_links_and_anchors_are_caught() {
    let root = scratch(
        "links",
        &[
            (
                "README.md",
                "# Room host\n\n## Two words\n\n## `code` and: punctuation\n",
            ),
            ("docs/a.md", "# A\n\n## Same\n\n## Same\n"),
            ("rooms-js/a.js", SCRIPT),
        ],
    );
    let good = "[r](../README.md#two-words) [c](../README.md#code-and-punctuation) \
                [s](#same-1) [j](../rooms-js/a.js) [d](../rooms-js/) [w](https://x.invalid/y) \
                `[not](a-link.md)`\n\n[ref]: ../README.md\n";
    let text = format!("# A\n\n## Same\n\n## Same\n\n{good}");
    let problems = link_problems(&root, &page("docs/a.md", &text));
    assert!(problems.is_empty(), "{problems:?}");

    let cases = [
        ("[x](missing.md)", "docs/missing.md, which does not exist"),
        (
            "[x](../rooms-js/b.js)",
            "rooms-js/b.js, which does not exist",
        ),
        ("[x](../../outside.md)", "leaves the repository"),
        (
            "[x](../README.md#no-such)",
            "#no-such, which is no heading of README.md",
        ),
        (
            "[x](#nowhere)",
            "#nowhere, which is no heading of docs/a.md",
        ),
        ("[x]: gone.md", "docs/gone.md, which does not exist"),
    ];
    for (text, expected) in cases {
        let problems = link_problems(&root, &page("docs/a.md", &format!("# A\n\n{text}\n")));
        assert_eq!(problems.len(), 1, "{text}: {problems:?}");
        assert!(problems[0].contains(expected), "{text}: {problems:?}");
    }
}
