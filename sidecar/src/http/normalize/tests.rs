//! Normalization by example: every mode on the spellings that matter, and idempotence.

use super::*;

fn modes(
    slashes: SlashMode,
    escaped_slashes: EscapedSlashMode,
    path_parameters: PathParameterMode,
) -> PathNormalization {
    PathNormalization {
        slashes,
        escaped_slashes,
        path_parameters,
    }
}

/// The normalized path under the defaults; unchanged paths come back as themselves.
fn norm(path: &str) -> Result<String, PathError> {
    norm_with(path, &PathNormalization::default())
}

fn norm_with(path: &str, opts: &PathNormalization) -> Result<String, PathError> {
    Ok(normalize_path(path, opts)?.unwrap_or_else(|| path.to_string()))
}

#[test]
fn every_spelling_of_admin_is_admin() {
    for p in [
        "/admin",
        "/%61dmin",
        "/%61%64%6D%69%6e",
        "//admin",
        "///admin",
        "/./admin",
        "/x/../admin",
        "/%2e/admin",
        "/%2E%2e/admin",
        "/%2e%2e/admin",
        "/../admin",
        "/x/y/../../admin",
        "/x/%2e%2e/admin",
    ] {
        assert_eq!(norm(p).as_deref(), Ok("/admin"), "{p}");
    }
    assert_eq!(norm("/admin/").as_deref(), Ok("/admin/"));
    assert_eq!(norm("/admin//x").as_deref(), Ok("/admin/x"));
}

#[test]
fn different_paths_stay_different() {
    // Case is the app's business: /ADMIN is not /admin.
    assert_eq!(norm("/ADMIN").as_deref(), Ok("/ADMIN"));
    assert_eq!(norm("/x/%2e").as_deref(), Ok("/x/"));
    assert_eq!(norm("/x/.").as_deref(), Ok("/x/"));
    assert_eq!(norm("/x/..").as_deref(), Ok("/"));
    assert_eq!(norm("/..").as_deref(), Ok("/"));
    assert_eq!(norm("/").as_deref(), Ok("/"));
    assert_eq!(norm("/.well-known/x").as_deref(), Ok("/.well-known/x"));
    assert_eq!(norm("/a..b/c.").as_deref(), Ok("/a..b/c."));
    // Reserved characters stay encoded, in upper case (RFC 3986 §6.2.2.1).
    assert_eq!(norm("/a%3fb%3A").as_deref(), Ok("/a%3Fb%3A"));
    assert_eq!(norm("/%25").as_deref(), Ok("/%25"));
    // UTF-8 passes whole.
    assert_eq!(norm("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
}

#[test]
fn the_defaults_refuse_what_apps_disagree_on() {
    for p in [
        "/admin%2F..",
        "/admin%2f..",
        "/%5Cadmin",
        "/\\admin",
        "/a%5c",
    ] {
        assert_eq!(norm(p), Err(PathError::EscapedSlash), "{p}");
    }
    for p in ["/..;/admin", "/admin;x", "/a;jsessionid=1/b"] {
        assert_eq!(norm(p), Err(PathError::PathParameter), "{p}");
    }
    for p in ["/%", "/%4", "/%zz", "/a%g1", "/%%41"] {
        assert_eq!(norm(p), Err(PathError::Malformed), "{p}");
    }
}

#[test]
fn the_other_modes() {
    use EscapedSlashMode as E;
    use PathParameterMode as P;
    use SlashMode as S;
    let decode = modes(S::Merge, E::Decode, P::Reject);
    assert_eq!(norm_with("/admin%2F..", &decode).as_deref(), Ok("/"));
    assert_eq!(norm_with("/%5Cadmin", &decode).as_deref(), Ok("/admin"));
    assert_eq!(norm_with("/\\admin", &decode).as_deref(), Ok("/admin"));
    assert_eq!(
        norm_with("/public%2F..%2Fadmin", &decode).as_deref(),
        Ok("/admin")
    );
    let keep = modes(S::Keep, E::Keep, P::Keep);
    assert_eq!(norm_with("/a%2fb", &keep).as_deref(), Ok("/a%2Fb"));
    assert_eq!(norm_with("//admin", &keep).as_deref(), Ok("//admin"));
    assert_eq!(norm_with("/a//../b", &keep).as_deref(), Ok("/a/b"));
    assert_eq!(norm_with("/..;/admin", &keep).as_deref(), Ok("/..;/admin"));
    assert_eq!(norm_with("/\\admin", &keep).as_deref(), Ok("/\\admin"));
    let strip = modes(S::Merge, E::Reject, P::Strip);
    assert_eq!(norm_with("/..;/admin", &strip).as_deref(), Ok("/admin"));
    assert_eq!(
        norm_with("/a;jsessionid=1/b;v=2", &strip).as_deref(),
        Ok("/a/b")
    );
}

#[test]
fn normalizing_twice_changes_nothing() {
    use EscapedSlashMode as E;
    use PathParameterMode as P;
    use SlashMode as S;
    let all = [
        modes(S::Merge, E::Reject, P::Reject),
        modes(S::Merge, E::Decode, P::Strip),
        modes(S::Keep, E::Keep, P::Keep),
        modes(S::Keep, E::Decode, P::Strip),
    ];
    let paths = [
        "/a/./b/../c//d/",
        "//x/%2e%2E/y",
        "/a%2Fb/..",
        "/%5C..%5Cadmin",
        "/x;y/../z;w",
        "/..;/..;/a",
        "/a/b/c/../../..//../d",
        "/%7euser/%41",
    ];
    for opts in &all {
        for p in paths {
            if let Ok(once) = norm_with(p, opts) {
                assert_eq!(norm_with(&once, opts), Ok(once.clone()), "{p} {opts:?}");
                assert_eq!(normalize_path(&once, opts), Ok(None), "{p} {opts:?}");
            }
        }
    }
}

#[test]
fn the_uri_keeps_its_query_scheme_and_authority() {
    let opts = PathNormalization::default();
    let mut uri: Uri = "http://billing.rides/x/../%61dmin?next=/../a%2F"
        .parse()
        .unwrap();
    normalize_uri(&mut uri, &opts).unwrap();
    assert_eq!(uri.to_string(), "http://billing.rides/admin?next=/../a%2F");
    let mut uri: Uri = "/a/./b?q".parse().unwrap();
    normalize_uri(&mut uri, &opts).unwrap();
    assert_eq!(uri.to_string(), "/a/b?q");
    let mut uri: Uri = "*".parse().unwrap();
    normalize_uri(&mut uri, &opts).unwrap();
    assert_eq!(uri.to_string(), "*");
}
