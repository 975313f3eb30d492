//! `trellis inject -f FILE` and `trellis crds`: the injector and the CRD generator, offline.

use crate::args::InjectArgs;
use crate::output::print;
use anyhow::Context;
use std::io::Read;
use std::process::ExitCode;
use trellis_control::inject::manifest::inject_stream;
use trellis_control::inject::{InjectConfig, Outcome};

pub fn run(args: &InjectArgs, ca_bundle: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read stdin")?;
        ("<stdin>".to_string(), s)
    } else {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        (args.file.display().to_string(), text)
    };
    let mut cfg = InjectConfig::default();
    if let Some(image) = &args.proxy_image {
        cfg.proxy_image = image.clone();
    }
    // The proxy verifies the control plane against this; without it the pod cannot start.
    let pem = std::fs::read_to_string(ca_bundle).with_context(|| {
        format!(
            "trellis inject needs the mesh CA certificate for the proxies, and cannot read --ca-bundle {}; \
             get it with: kubectl -n trellis-system get secret trellis-ca -o jsonpath='{{.data.tls\\.crt}}' | base64 -d > ca.pem",
            ca_bundle.display()
        )
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!(
            "--ca-bundle {} holds no PEM certificate; it must be the mesh CA (tls.crt of the trellis-ca Secret)",
            ca_bundle.display()
        );
    }
    cfg.ca_bundle = Some(pem);
    let (yaml, reports) = inject_stream(&name, &text, &cfg)?;
    print(&yaml)?;
    // The summary goes to stderr so that stdout stays a clean stream for kubectl.
    for r in reports {
        let what = match r.outcome {
            Some(Outcome::Injected) => "injected",
            Some(Outcome::AlreadyInjected) => "already injected, unchanged",
            Some(Outcome::OptedOut) => "skipped (trellis.dev/inject: disabled)",
            None => continue,
        };
        eprintln!("{} {what}", r.object);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_crds() -> anyhow::Result<ExitCode> {
    let docs: Vec<String> = trellis_config::crd::render_all()
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    print(&docs.join("---\n"))?;
    Ok(ExitCode::SUCCESS)
}
