//! `trellis check`: validate mesh YAML offline, with the same loader and rules as the
//! control plane, and report every mistake as `file:line: field: message`.

use crate::args::{CheckArgs, Output};
use crate::output::{count, print, print_json};
use std::path::Path;
use std::process::ExitCode;
use trellis_config::ConfigError;

pub fn run(args: &CheckArgs, output: Output) -> anyhow::Result<ExitCode> {
    let mut files = 0;
    let mut errors: Vec<ConfigError> = Vec::new();
    for path in &args.paths {
        let found = yaml_files(path);
        if found == 0 {
            errors.push(ConfigError {
                file: path.display().to_string(),
                line: 0,
                field: String::new(),
                message: "no *.yaml or *.yml files in this directory; name mesh files *.yaml"
                    .into(),
            });
            continue;
        }
        files += found;
        // Each path is one whole mesh: references (a route's backendRefs, a policy's
        // targetRef) must resolve within it, as they must in the control plane's source.
        match trellis_config::load_dir_or_file(path) {
            Err(e) => errors.extend(e.0),
            // A certificate that cannot serve does not refuse the config (its listener
            // serves the others, or fails its handshakes, and the other listeners serve on),
            // but it is a mistake to fix before it ships.
            Ok(cfg) => {
                let now = trellis_identity::cert::unix_now();
                let certs = trellis_config::gateway_tls::resolve(&cfg, now);
                errors.extend(certs.problems.into_iter().map(|p| p.error));
            }
        }
    }
    match output {
        Output::Json => print_json(&serde_json::json!({
            "ok": errors.is_empty(),
            "files": files,
            "errors": errors,
        }))?,
        Output::Table => {
            let mut text: String = errors.iter().map(|e| format!("{e}\n")).collect();
            if errors.is_empty() {
                text.push_str(&format!("{} OK\n", count(files, "file", "files")));
            } else {
                text.push_str(&format!(
                    "{}\n",
                    count(errors.len() as u64, "error", "errors")
                ));
            }
            print(&text)?;
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How many files `load_dir_or_file` reads at `path`: a file (or a missing path, which
/// the loader reports) counts as one; a directory, its `*.yaml` and `*.yml` files that are
/// not hidden, as the loader picks them.
fn yaml_files(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 1;
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_mesh_file(p))
        .count() as u64
}

fn is_mesh_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}
