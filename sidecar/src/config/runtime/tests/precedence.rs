//! Route precedence: the rule the proxy picks against a reference written from the Gateway API
//! HTTPRoute spec, over random route sets and requests.

use super::*;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PathKind {
    // In precedence order, lowest first.
    PathPrefix,
    RegularExpression,
    Exact,
}

/// What a regular expression matches.
type Meaning = fn(&str) -> bool;

/// The regular expressions the generator uses, each with its meaning written out by hand, so
/// that the reference needs no regex engine.
const REGEXES: [(&str, Meaning); 3] = [
    ("/a.*", |p| p.starts_with("/a")),
    ("/[ab]+", |p| {
        p.len() > 1 && p[1..].bytes().all(|b| b == b'a' || b == b'b')
    }),
    ("/a/[a-z]", |p| p.len() == 4 && p.starts_with("/a/")),
];

#[derive(Debug, Clone)]
struct Match {
    /// `None` leaves `path` out: the Gateway API default, `PathPrefix /`.
    path: Option<(PathKind, &'static str)>,
    method: Option<&'static str>,
    /// As written in the route; names may differ from the request's in case.
    headers: Vec<(&'static str, &'static str)>,
    query: Vec<(&'static str, &'static str)>,
}

#[derive(Debug, Clone)]
struct Route {
    name: &'static str,
    /// Each rule's matches; an empty list leaves `matches` out (one default match).
    rules: Vec<Vec<Match>>,
}

#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    query: Vec<(&'static str, &'static str)>,
}

impl Match {
    /// The path match as the Gateway API defines it when `path` is left out.
    fn path(&self) -> (PathKind, &'static str) {
        self.path.unwrap_or((PathKind::PathPrefix, "/"))
    }

    /// Gateway API: of several entries with equivalent names (header names compare without
    /// case, query parameter names with it), only the first counts; the others are ignored.
    fn effective_headers(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = Vec::new();
        for &(n, v) in &self.headers {
            let n = n.to_ascii_lowercase();
            if !out.iter().any(|(seen, _)| *seen == n) {
                out.push((n, v));
            }
        }
        out
    }

    fn effective_query(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&'static str, &'static str)> = Vec::new();
        for &(n, v) in &self.query {
            if !out.iter().any(|(seen, _)| *seen == n) {
                out.push((n, v));
            }
        }
        out
    }

    /// Whether `req` satisfies every condition, read straight from the spec.
    fn accepts(&self, req: &Request) -> bool {
        let (kind, value) = self.path();
        let path_ok = match kind {
            PathKind::Exact => req.path == value,
            // "Matching is done on a path element by element basis ... a trailing `/` is
            // ignored": the prefix's elements lead the path's.
            PathKind::PathPrefix => {
                let elements = |p: &'static str| p.split('/').filter(|e| !e.is_empty());
                let path: Vec<_> = elements(req.path).collect();
                let prefix: Vec<_> = elements(value).collect();
                path.starts_with(&prefix)
            }
            PathKind::RegularExpression => {
                let (_, meaning) = REGEXES.iter().find(|(re, _)| *re == value).unwrap();
                meaning(req.path)
            }
        };
        // A request carries each header at most once; a query parameter sent twice compares
        // its first value (docs/concepts.md, "Matching details").
        let header = |n: &str| req.headers.iter().find(|(h, _)| *h == n).map(|(_, v)| *v);
        let param = |n: &str| req.query.iter().find(|(q, _)| *q == n).map(|(_, v)| *v);
        path_ok
            && self.method.is_none_or(|m| m == req.method)
            && (self.effective_headers().iter()).all(|(n, v)| header(n) == Some(*v))
            && (self.effective_query().iter()).all(|(n, v)| param(n) == Some(*v))
    }

    /// The Gateway API's order, greatest first: Exact, then (Trellis's choice for what the spec
    /// leaves to implementations) RegularExpression, then PathPrefix; the longer path value;
    /// a method match; more header matches; more query parameter matches.
    fn precedence(&self) -> (PathKind, usize, bool, usize, usize) {
        let (kind, value) = self.path();
        (
            kind,
            value.len(),
            self.method.is_some(),
            self.effective_headers().len(),
            self.effective_query().len(),
        )
    }
}

/// The rule the Gateway API says `req` takes, as `route/rule index`: the match of greatest
/// precedence; on a tie the route first by `namespace/name` (all share a namespace, and files
/// have no creation time), then the first rule in list order.
fn reference(routes: &[Route], req: &Request) -> Option<String> {
    let default = [Match {
        path: None,
        method: None,
        headers: vec![],
        query: vec![],
    }];
    let mut best: Option<(&Match, &str, usize)> = None;
    let mut sorted: Vec<&Route> = routes.iter().collect();
    sorted.sort_by_key(|r| r.name);
    for r in sorted {
        for (i, rule) in r.rules.iter().enumerate() {
            let matches = if rule.is_empty() { &default[..] } else { rule };
            for m in matches.iter().filter(|m| m.accepts(req)) {
                // Strictly greater: an equal match seen earlier keeps its place.
                if best.is_none_or(|(b, _, _)| m.precedence() > b.precedence()) {
                    best = Some((m, r.name, i));
                }
            }
        }
    }
    best.map(|(_, name, i)| format!("{name}/{i}"))
}

/// The HTTPRoutes as mesh YAML. Each rule sets `x-rule: name/index`.
fn yaml(routes: &[Route]) -> String {
    let mut y = String::new();
    for r in routes {
        let rules: Vec<String> = (r.rules.iter().enumerate())
            .map(|(i, matches)| {
                let list: Vec<String> = matches.iter().map(Match::yaml).collect();
                let list = format!("[{}]", list.join(", "));
                rule(
                    &format!("{}/{i}", r.name),
                    (!matches.is_empty()).then_some(&*list),
                )
            })
            .collect();
        y.push_str(&route(r.name, &rules));
    }
    y
}

impl Match {
    fn yaml(&self) -> String {
        let list = |v: &[(&str, &str)]| {
            let items: Vec<_> = (v.iter())
                .map(|(n, v)| format!("{{name: {n}, value: {v:?}}}"))
                .collect();
            format!("[{}]", items.join(", "))
        };
        let mut fields = Vec::new();
        if let Some((kind, value)) = self.path {
            fields.push(format!("path: {{type: {kind:?}, value: {value:?}}}"));
        }
        if let Some(method) = self.method {
            fields.push(format!("method: {method}"));
        }
        if !self.headers.is_empty() {
            fields.push(format!("headers: {}", list(&self.headers)));
        }
        if !self.query.is_empty() {
            fields.push(format!("queryParams: {}", list(&self.query)));
        }
        format!("{{{}}}", fields.join(", "))
    }
}

const PATHS: [&str; 6] = ["/", "/a", "/a/", "/a/b", "/ab", "/b"];

fn a_match() -> impl Strategy<Value = Match> {
    let path = prop_oneof![
        1 => Just(None),
        3 => select(&PATHS[..]).prop_map(|p| Some((PathKind::PathPrefix, p))),
        3 => select(&PATHS[..]).prop_map(|p| Some((PathKind::Exact, p))),
        1 => select(REGEXES.map(|(re, _)| re).to_vec())
            .prop_map(|re| Some((PathKind::RegularExpression, re))),
    ];
    let method = prop_oneof![2 => Just(None), 1 => Just(Some("GET")), 1 => Just(Some("POST"))];
    // `X-V` and `x-v` are the same header; `q` twice is the same parameter.
    let header = (select(vec!["x-v", "X-V", "x-w"]), select(vec!["1", "2"]));
    let param = (select(vec!["q", "r"]), select(vec!["1", "2"]));
    (
        path,
        method,
        prop::collection::vec(header, 0..=2),
        prop::collection::vec(param, 0..=2),
    )
        .prop_map(|(path, method, headers, query)| Match {
            path,
            method,
            headers,
            query,
        })
}

/// One to three HTTPRoutes with distinct names, in any order in the file.
fn routes() -> impl Strategy<Value = Vec<Route>> {
    let names = subsequence(vec!["a", "a-b", "ab", "b", "c"], 1..=3).prop_shuffle();
    let rules = || prop::collection::vec(prop::collection::vec(a_match(), 0..=2), 1..=3);
    names
        .prop_flat_map(move |names| {
            let n = names.len();
            (Just(names), prop::collection::vec(rules(), n))
        })
        .prop_map(|(names, rules)| {
            (names.into_iter().zip(rules))
                .map(|(name, rules)| Route { name, rules })
                .collect()
        })
}

fn request() -> impl Strategy<Value = Request> {
    let paths = vec![
        "/", "/a", "/a/", "/a/b", "/a/b/c", "/a/c", "/ab", "/b", "/c",
    ];
    let header = (select(vec!["x-v", "x-w"]), select(vec!["1", "2"]));
    let param = (select(vec!["q", "r", "Q"]), select(vec!["1", "2"]));
    (
        select(vec!["GET", "POST", "PUT"]),
        select(paths),
        prop::collection::vec(header, 0..=2),
        prop::collection::vec(param, 0..=3),
    )
        .prop_map(|(method, path, mut headers, query)| {
            headers.dedup_by_key(|(n, _)| *n);
            Request {
                method,
                path,
                headers,
                query,
            }
        })
}

impl Request {
    fn to_http(&self) -> (Method, Uri, HeaderMap) {
        let mut uri = self.path.to_string();
        for (i, (n, v)) in self.query.iter().enumerate() {
            let _ = write!(uri, "{}{n}={v}", if i == 0 { '?' } else { '&' });
        }
        let mut headers = HeaderMap::new();
        for &(n, v) in &self.headers {
            headers.insert(n, v.parse().unwrap());
        }
        (self.method.parse().unwrap(), uri.parse().unwrap(), headers)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A request takes the rule that the Gateway API's precedence order picks among all the
    /// matches it satisfies, across every HTTPRoute of the Service port, whatever order the
    /// routes come in; and no rule when none matches.
    #[test]
    fn a_request_takes_the_rule_gateway_api_precedence_picks(
        routes in routes(),
        requests in prop::collection::vec(request(), 16),
    ) {
        let rt = runtime(&yaml(&routes));
        let port = web(&rt);
        for req in &requests {
            let (method, uri, headers) = req.to_http();
            let got = port.route(&method, &uri, &headers).map(picked);
            prop_assert_eq!(got, reference(&routes, req), "request {:?}", req);
        }
    }
}
