//! Where a room runtime's modules come from: the resolver and loader that
//! keep every import inside the scripts directory, and the bytecode of a
//! compiled module graph ([`Bytecode`]) that rooms load instead of parsing
//! the sources again.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Module, WriteOptions};

/// A script problem with its location, as `file:line:col: message`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScriptError {
    /// Path relative to the scripts directory (e.g. `chat.js`, `lib/util.js`).
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

impl ScriptError {
    /// Builds an error from a JS message and stack, locating it by the first
    /// stack frame that names a file (falling back to `file`).
    pub fn from_js(file: &str, message: &str, stack: Option<&str>) -> ScriptError {
        let located = stack.and_then(|s| s.lines().find_map(parse_frame));
        let (file, line, column) = match located {
            Some((f, l, c)) => (f, l, c),
            None => (file.to_string(), 0, 0),
        };
        ScriptError {
            file,
            line,
            column,
            message: message.to_string(),
        }
    }
}

/// `    at onMessage (chat.js:12:5)` or `    at chat.js:3:9` → `(file, line, col)`.
fn parse_frame(frame: &str) -> Option<(String, u32, u32)> {
    let frame = frame.trim().strip_prefix("at ")?;
    let location = match frame.rfind('(') {
        Some(open) => frame[open + 1..].trim_end_matches(')'),
        None => frame,
    };
    let mut parts = location.rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next()?;
    if file.is_empty() || file.starts_with('<') || file.starts_with("roomhost:") {
        return None;
    }
    Some((file.to_string(), line, column))
}

/// Bytecode by module name (path relative to the scripts directory).
pub type Bytecode = BTreeMap<String, Vec<u8>>;

/// Bytecode and source checksum by module name, filled during a compile.
pub type CompiledModules = BTreeMap<String, (Vec<u8>, u32)>;

/// Where a room runtime's modules come from.
#[derive(Clone)]
pub enum ModuleSource {
    /// Compile from disk, recording each module's bytecode and source hash
    /// (the scratch runtime of a compile).
    Disk {
        root: PathBuf,
        compiled: Arc<Mutex<CompiledModules>>,
    },
    /// Load bytecode compiled earlier.
    Compiled(Arc<Bytecode>),
}

impl ModuleSource {
    /// Declares the module `name` in `ctx`.
    pub fn declare<'js>(
        &self,
        ctx: &Ctx<'js>,
        name: &str,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        match self {
            ModuleSource::Disk { root, compiled } => {
                let path = root.join(name);
                let within = path
                    .canonicalize()
                    .map(|p| p.starts_with(root))
                    .map_err(|e| rquickjs::Error::new_loading_message(name, e.to_string()))?;
                if !within {
                    return Err(rquickjs::Error::new_loading_message(
                        name,
                        "resolves outside the scripts directory",
                    ));
                }
                let source = std::fs::read(&path)
                    .map_err(|e| rquickjs::Error::new_loading_message(name, e.to_string()))?;
                let hash = crc32c::crc32c(&source);
                let module = Module::declare(ctx.clone(), name, source)?;
                // Rooms load this bytecode: without the source text (kept
                // only for `Function.prototype.toString`) each room is
                // smaller; line numbers for stack traces stay.
                let bytecode = module.write(WriteOptions {
                    strip_source: true,
                    ..WriteOptions::default()
                })?;
                compiled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), (bytecode, hash));
                Ok(module)
            }
            ModuleSource::Compiled(modules) => {
                let bytes = modules.get(name).ok_or_else(|| {
                    rquickjs::Error::new_loading_message(
                        name,
                        "not part of the compiled module graph",
                    )
                })?;
                // SAFETY: the bytes were produced by `Module::write` in this
                // process, with the same QuickJS build.
                unsafe { Module::load(ctx.clone(), bytes) }
            }
        }
    }
}

/// Resolves import specifiers to module names relative to the scripts
/// directory, refusing anything that leaves it.
pub struct ScriptResolver;

impl Resolver for ScriptResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        resolve_import(base, name)
            .map_err(|why| rquickjs::Error::new_resolving_message(base, name, why))
    }
}

/// `base` is the importing module's name (`chat.js`, `lib/a.js`).
pub fn resolve_import(base: &str, name: &str) -> Result<String, String> {
    if !(name.starts_with("./") || name.starts_with("../")) {
        return Err(format!(
            "import {name:?} refused: room scripts may only import relative paths (./x.js) inside the scripts directory"
        ));
    }
    if !(name.ends_with(".js") || name.ends_with(".mjs")) {
        return Err(format!(
            "import {name:?} refused: name the file with its .js extension"
        ));
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop(); // the importing file itself
    for component in Path::new(name).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!(
                        "import {name:?} from {base} refused: it escapes the scripts directory"
                    ));
                }
            }
            Component::Normal(part) => match part.to_str() {
                Some(p) if !p.contains('\\') && !p.contains('\0') => parts.push(p),
                _ => return Err(format!("import {name:?} refused: invalid path")),
            },
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "import {name:?} refused: absolute paths are not allowed"
                ));
            }
        }
    }
    Ok(parts.join("/"))
}

/// Serves modules from a [`ModuleSource`].
pub struct ScriptLoader(pub ModuleSource);

impl Loader for ScriptLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        self.0.declare(ctx, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_imports_inside_root() {
        assert_eq!(
            resolve_import("chat.js", "./lib/util.js").unwrap(),
            "lib/util.js"
        );
        assert_eq!(resolve_import("lib/a.js", "./b.js").unwrap(), "lib/b.js");
        assert_eq!(resolve_import("lib/a.js", "../c.js").unwrap(), "c.js");
        assert_eq!(resolve_import("lib/x/a.js", "../../c.js").unwrap(), "c.js");
    }

    #[test]
    fn refuses_escapes_and_bare_names() {
        for (base, name) in [
            ("chat.js", "../secret.js"),
            ("lib/a.js", "../../secret.js"),
            ("chat.js", "/etc/passwd.js"),
            ("chat.js", "fs"),
            ("chat.js", "node:fs"),
            ("chat.js", "https://x/y.js"),
            ("chat.js", "./util"),
        ] {
            assert!(resolve_import(base, name).is_err(), "{base} -> {name}");
        }
    }

    #[test]
    fn locates_errors_from_stacks() {
        let e = ScriptError::from_js(
            "chat.js",
            "boom",
            Some("    at onMessage (chat.js:12:5)\n    at <eval>\n"),
        );
        assert_eq!((e.file.as_str(), e.line, e.column), ("chat.js", 12, 5));
        let e = ScriptError::from_js("chat.js", "bad", Some("    at lib/u.js:3:9\n"));
        assert_eq!(e.to_string(), "lib/u.js:3:9: bad");
        let e = ScriptError::from_js("chat.js", "x", None);
        assert_eq!(e.to_string(), "chat.js: x");
    }
}
