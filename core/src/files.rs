//! Image files named by paths in a text column, confined to one root folder.

use std::path::{Component, Path, PathBuf};

use crate::error::{ClipError, ErrorKind, Result};

/// Resolve `rel` under `root` and read it. Relative paths are joined to the root; absolute
/// ones must already lie inside it. Both sides are canonicalised (symlinks and `..` resolved)
/// before the containment check, so neither `../x` nor a symlink pointing out escapes.
pub fn read_under(root: &Path, rel: &str) -> Result<Vec<u8>> {
    let path = resolve_under(root, rel)?;
    std::fs::read(&path).map_err(|e| unreadable(rel, e))
}

pub fn resolve_under(root: &Path, rel: &str) -> Result<PathBuf> {
    if rel.is_empty() || rel.contains('\0') {
        return Err(ClipError::new(ErrorKind::FileUnreadable, "image path is empty or contains NUL"));
    }
    let root = root.canonicalize().map_err(|e| {
        ClipError::new(
            ErrorKind::FileUnreadable,
            format!("pg_clip.image_root \"{}\" is not usable: {e}", root.display()),
        )
    })?;
    let p = Path::new(rel);
    let joined = if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
    // refuse `..` outright: it is never needed under a root and makes the message clearer
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(escape(rel));
    }
    let canon = joined.canonicalize().map_err(|e| unreadable(rel, e))?;
    if !canon.starts_with(&root) {
        return Err(escape(rel));
    }
    Ok(canon)
}

fn escape(rel: &str) -> ClipError {
    ClipError::new(ErrorKind::PathNotAllowed, format!("image path \"{rel}\" is outside pg_clip.image_root"))
        .hint("Paths are resolved under pg_clip.image_root; `..` and symlinks leading out of it are refused.")
}

fn unreadable(rel: &str, e: std::io::Error) -> ClipError {
    ClipError::new(ErrorKind::FileUnreadable, format!("cannot read image file \"{rel}\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let base = std::env::temp_dir().join(format!("pg_clip_files_{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.jpg"), b"a").unwrap();
        std::fs::write(base.join("secret.txt"), b"s").unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("out.jpg")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/a.jpg"), root.join("in.jpg")).unwrap();

        assert_eq!(read_under(&root, "sub/a.jpg").unwrap(), b"a");
        assert_eq!(read_under(&root, "in.jpg").unwrap(), b"a");
        assert_eq!(read_under(&root, root.join("sub/a.jpg").to_str().unwrap()).unwrap(), b"a");
        for bad in [
            "../secret.txt",
            "sub/../../secret.txt",
            "out.jpg",
            base.join("secret.txt").to_str().unwrap(),
            "/etc/passwd",
        ] {
            assert_eq!(read_under(&root, bad).unwrap_err().kind, ErrorKind::PathNotAllowed, "{bad}");
        }
        assert_eq!(read_under(&root, "missing.jpg").unwrap_err().kind, ErrorKind::FileUnreadable);
        assert_eq!(read_under(&root, "").unwrap_err().kind, ErrorKind::FileUnreadable);
        std::fs::remove_dir_all(base).unwrap();
    }
}
