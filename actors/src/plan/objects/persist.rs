//! The persisted directory set of a role (spec 3.7): the directories copied onto the member PV
//! by the init container and mounted back from it.

/// Base directories when the role has no setup package.
pub const BASE_NO_PACKAGE: &[&str] = &["/etc"];
/// Base directories for a setup package with the legacy layout.
pub const BASE_LEGACY_LAYOUT: &[&str] = &["/etc", "/opt", "/usr"];
/// Base directories for a setup package with the new layout.
pub const BASE_NEW_LAYOUT: &[&str] = &[
    "/etc",
    "/opt/guestconfig",
    "/var/log/guestconfig",
    "/usr/local/bin",
    "/usr/local/lib",
];

/// The base list for a role: `None` = no setup package, `Some(new_layout)` otherwise.
pub fn base_dirs(setup_package_new_layout: Option<bool>) -> &'static [&'static str] {
    match setup_package_new_layout {
        None => BASE_NO_PACKAGE,
        Some(false) => BASE_LEGACY_LAYOUT,
        Some(true) => BASE_NEW_LAYOUT,
    }
}

/// `true` when `dir` lies strictly below `parent`.
pub fn is_subdir(dir: &str, parent: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    dir.len() > parent.len() && dir.starts_with(parent) && dir[parent.len()..].starts_with('/')
}

/// Union of the base directories and the kdapp role's `persistDirs` (spec 3.7): keep a base dir
/// unless it is a sub-directory of another base or app dir (or a duplicate of an earlier base
/// dir); keep an app dir unless it is a sub-directory of any base/app dir or a duplicate of a base
/// dir or an earlier app dir. Order: surviving base dirs, then surviving app dirs.
pub fn persisted_dirs(base: &[&str], app: &[String]) -> Vec<String> {
    let all: Vec<&str> = base
        .iter()
        .copied()
        .chain(app.iter().map(String::as_str))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for (i, b) in base.iter().enumerate() {
        let dup = base[..i].contains(b);
        let sub = all.iter().any(|o| is_subdir(b, o));
        if !dup && !sub {
            out.push((*b).to_owned());
        }
    }
    for (i, a) in app.iter().enumerate() {
        let dup = base.contains(&a.as_str()) || app[..i].contains(a);
        let sub = all.iter().any(|o| is_subdir(a, o));
        if !dup && !sub {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn spec_example_union() {
        let app = s(&["/usr/lib/spark/conf", "/home", "/etc/hadoop"]);
        assert_eq!(
            persisted_dirs(BASE_LEGACY_LAYOUT, &app),
            s(&["/etc", "/opt", "/usr", "/home"])
        );
    }

    #[test]
    fn no_package_base_is_etc_only() {
        assert_eq!(
            persisted_dirs(base_dirs(None), &s(&["/home"])),
            s(&["/etc", "/home"])
        );
        assert_eq!(base_dirs(Some(false)), BASE_LEGACY_LAYOUT);
        assert_eq!(base_dirs(Some(true)), BASE_NEW_LAYOUT);
    }

    #[test]
    fn base_dir_below_app_dir_is_dropped_and_duplicates_removed() {
        let app = s(&["/usr/local", "/home", "/home", "/etc"]);
        assert_eq!(
            persisted_dirs(BASE_NEW_LAYOUT, &app),
            s(&[
                "/etc",
                "/opt/guestconfig",
                "/var/log/guestconfig",
                "/usr/local",
                "/home"
            ])
        );
    }

    #[test]
    fn prefix_that_is_not_a_parent_is_kept() {
        assert!(!is_subdir("/etcetera", "/etc"));
        assert!(is_subdir("/etc/x", "/etc"));
        assert!(!is_subdir("/etc", "/etc"));
        assert_eq!(
            persisted_dirs(&["/etc"], &s(&["/etcetera"])),
            s(&["/etc", "/etcetera"])
        );
    }
}
