//! The Kubernetes manifests (`deploy/kubernetes/`): every overlay renders with `kubectl
//! kustomize`, validates against the Kubernetes schemas (`kubernetes-validate`, offline), and
//! agrees with what the binary reads: the probes and ports are the config's admin and proxy
//! listeners, the config file is where `--config` looks, every `${VAR}` of the config is set by
//! the pod (from the ConfigMap or a Secret key), the shutdown fits the grace period, and the
//! rendered config passes `authgate check` with the Secret's values filled in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn render(overlay: &str) -> (String, Vec<Value>) {
    let dir = common::repo().join("deploy/kubernetes/overlays").join(overlay);
    let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl kustomize {overlay}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect();
    (text, docs)
}

fn validate(overlay: &str, text: &str) {
    let tool = common::repo().join("target/tools/k8s/bin/kubernetes-validate");
    assert!(tool.exists(), "{} is missing: run scripts/setup", tool.display());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{overlay}.yaml"));
    std::fs::write(&file, text).unwrap();
    let out = Command::new(&tool).arg("--strict").arg(&file).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{overlay} does not validate:\n{report}");
    assert!(report.contains("passed for resource deployment/authgate"), "{report}");
}

/// The object of `kind` named `name` (a generated ConfigMap: `name` and its hash suffix).
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let named = |n: &str| n == name || (kind == "ConfigMap" && n.starts_with(&format!("{name}-")));
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"].as_str().is_some_and(named))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn port_named(container: &Value, name: &str) -> u64 {
    let ports = container["ports"].as_sequence().unwrap();
    ports.iter().find(|p| p["name"] == name).and_then(|p| p["containerPort"].as_u64()).unwrap()
}

/// Checks one overlay; returns the Deployment's replicas.
fn check(overlay: &str) -> u64 {
    let (text, docs) = render(overlay);
    validate(overlay, &text);
    let deployment = find(&docs, "Deployment", "authgate");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let config_text = find(&docs, "ConfigMap", "authgate-config")["data"]["authgate.toml"].as_str().unwrap();
    let config: toml::Table = toml::from_str(config_text).unwrap();

    // the config file is where the container's --config says, from the mounted ConfigMap
    let args: Vec<&str> =
        container["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let path = args.iter().skip_while(|a| **a != "--config").nth(1).unwrap();
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(*path, format!("{mount}/authgate.toml"), "{overlay}");
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], container["volumeMounts"][0]["name"]);
    let configmap = volume["configMap"]["name"].as_str().unwrap();
    assert!(configmap.starts_with("authgate-config"), "{configmap}");

    // probes on the admin listener, the Service on the proxy listener
    let admin_port = port_named(container, "admin");
    let http_port = port_named(container, "http");
    let server = &config["server"];
    assert_eq!(server["admin_listen"].as_str().unwrap(), format!("0.0.0.0:{admin_port}"));
    assert_eq!(server["listen"][0].as_str().unwrap(), format!("0.0.0.0:{http_port}"));
    for (probe, path) in
        [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
    {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{overlay} {probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{overlay} {probe}");
    }
    let service = find(&docs, "Service", "authgate");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");

    // a rolling update drops nothing: authgate stays serving (not ready) while the pod leaves
    // the Service, and SIGKILL comes after the drain, the grace period and Pingora's own 5 s
    let seconds = |key: &str| humantime::parse_duration(server[key].as_str().unwrap()).unwrap().as_secs();
    let (drain, grace) = (seconds("drain_period"), seconds("grace_period"));
    assert!(drain >= 5, "{overlay}: a drain of {drain} s is shorter than endpoint propagation");
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0);
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination >= pause + drain + grace + 5,
        "{overlay}: {termination} < {pause} + {drain} + {grace} + 5"
    );

    // hardened: non-root, read-only root, no capabilities, no service account token
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);

    // the admin port is not open to the cluster: only the monitoring namespace reaches it
    let policy = find(&docs, "NetworkPolicy", "authgate");
    let rules = policy["spec"]["ingress"].as_sequence().unwrap();
    let open: Vec<u64> = rules
        .iter()
        .filter(|r| r.get("from").is_none())
        .flat_map(|r| r["ports"].as_sequence().unwrap().iter())
        .filter_map(|p| p["port"].as_u64())
        .collect();
    // (behind ingress-nginx the proxy port is for its namespace alone)
    let from_ingress: Vec<u64> = rules
        .iter()
        .filter(|r| {
            r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "ingress-nginx"
        })
        .flat_map(|r| r["ports"].as_sequence().unwrap().iter())
        .filter_map(|p| p["port"].as_u64())
        .collect();
    match overlay {
        "ingress-nginx" => assert_eq!((open, from_ingress), (vec![], vec![http_port]), "{overlay}"),
        _ => assert_eq!(open, [http_port], "{overlay}: ports open to everyone"),
    }

    // every ${VAR} of the config is set in the pod; the check passes with the Secret's values
    let env_config = find(&docs, "ConfigMap", "authgate-env")["data"].as_mapping().unwrap();
    let mut env: BTreeMap<String, String> = env_config
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned()))
        .collect();
    for e in container["env"].as_sequence().unwrap() {
        let secret = &e["valueFrom"]["secretKeyRef"];
        assert_eq!(secret["name"], "authgate", "{overlay}: secrets come from the `authgate` Secret");
        // what an operator would put in the Secret under that key
        let value = match secret["key"].as_str().unwrap() {
            "redis-url" => "redis://redis.authgate.svc:6379".to_owned(),
            key => format!("{key}-K8s-7f3a9c1e5b2d8f4a6c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f"),
        };
        env.insert(e["name"].as_str().unwrap().to_owned(), value);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("authgate.toml"), config_text).unwrap();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = common::authgate(&["check", "--config", "authgate.toml"], &pairs, dir.path());
    assert_eq!(code, 0, "{overlay}: authgate check refused the rendered config:\n{out}{err}");
    // and without the Secret it does not start: nothing secret has a default
    let without: Vec<(&str, &str)> = pairs.iter().copied().filter(|(k, _)| !k.ends_with("_SECRET")).collect();
    let (code, _, err) = common::authgate(&["check", "--config", "authgate.toml"], &without, dir.path());
    assert_ne!(code, 0, "{overlay}: starts without its secrets");
    assert!(err.contains("AUTHGATE_SESSION_SECRET"), "{err}");
    deployment["spec"]["replicas"].as_u64().unwrap()
}

#[test]
fn the_single_overlay_renders_validates_and_matches_the_binary() {
    assert_eq!(check("single"), 1);
}

#[test]
fn the_ha_overlay_shares_sessions_and_survives_disruption() {
    assert_eq!(check("ha"), 3);
    let (_, docs) = render("ha");
    let config: toml::Table = toml::from_str(
        find(&docs, "ConfigMap", "authgate-config")["data"]["authgate.toml"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(config["session"]["store"].as_str(), Some("redis"));
    let pdb = find(&docs, "PodDisruptionBudget", "authgate");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    let hpa = find(&docs, "HorizontalPodAutoscaler", "authgate");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "authgate");
    let spread =
        &find(&docs, "Deployment", "authgate")["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(spread.as_sequence().map(Vec::len), Some(2));
}

/// ingress-nginx asks authgate for every request to the app (tests/forward_auth.rs runs these
/// Ingresses in nginx): the app's Ingresses validate, reach authgate's Service at its auth
/// endpoint and copy every header authgate answers with; authgate's own Ingress exposes its
/// browser endpoints by exact path and never the auth endpoint.
#[test]
fn the_ingress_nginx_overlay_asks_authgate_for_every_request() {
    assert_eq!(check("ingress-nginx"), 1);
    let (_, docs) = render("ingress-nginx");
    let config: toml::Table = toml::from_str(
        find(&docs, "ConfigMap", "authgate-config")["data"]["authgate.toml"].as_str().unwrap(),
    )
    .unwrap();
    let fa = &config["forward_auth"];
    assert_eq!(fa["enabled"].as_bool(), Some(true));
    let default_path = authgate::config::ForwardAuthConfig::default().path;
    let auth_path = fa.get("path").and_then(|p| p.as_str()).unwrap_or(&default_path);
    let service = find(&docs, "Service", "authgate");
    let service_port = &service["spec"]["ports"][0];

    let ours = find(&docs, "Ingress", "authgate");
    assert_eq!(ours["metadata"]["namespace"], "authgate", "the namespace auth-url names");
    let paths = ours["spec"]["rules"][0]["http"]["paths"].as_sequence().unwrap();
    let exposed: Vec<(&str, &str)> =
        paths.iter().map(|p| (p["path"].as_str().unwrap(), p["pathType"].as_str().unwrap())).collect();
    assert_eq!(
        exposed,
        [
            ("/oauth2/start", "Exact"),
            ("/oauth2/callback", "Exact"),
            ("/oauth2/sign_out", "Exact"),
            ("/oauth2/userinfo", "Exact"),
            ("/.well-known/oauth-protected-resource", "Prefix"),
            (authgate::assertion::JWKS_PATH, "Exact"),
        ],
        "browser endpoints by exact path: never the auth endpoint"
    );
    for p in paths {
        assert_eq!(p["backend"]["service"]["name"], "authgate");
        assert_eq!(p["backend"]["service"]["port"]["name"], service_port["name"]);
    }
    // the Service's port 80, as auth-url names it (no port)
    assert_eq!(service_port["port"], 80);
    let public_url =
        find(&docs, "ConfigMap", "authgate-env")["data"]["AUTHGATE_PUBLIC_URL"].as_str().unwrap();
    assert_eq!(format!("https://{}", ours["spec"]["rules"][0]["host"].as_str().unwrap()), public_url);

    let file = common::repo().join("deploy/kubernetes/overlays/ingress-nginx/app-ingress.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let tool = common::repo().join("target/tools/k8s/bin/kubernetes-validate");
    let out = Command::new(&tool).arg("--strict").arg(&file).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.contains("passed for resource ingress/legacy-app"), "{report}");
    let apps: Vec<Value> =
        serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect();
    assert_eq!(apps.len(), 2);
    let mut sent = common::headers_authgate_sends();
    sent.push("cookie".into());
    sent.sort();
    for app in &apps {
        let annotation =
            |n: &str| app["metadata"]["annotations"][format!("nginx.ingress.kubernetes.io/{n}")].as_str();
        // the Service by its in-cluster name, naming the host nginx served
        let url = format!("http://authgate.authgate.svc.cluster.local{auth_path}?host=$host");
        assert_eq!(annotation("auth-url"), Some(url.as_str()));
        let mut copied: Vec<String> = annotation("auth-response-headers")
            .unwrap()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        copied.sort();
        assert_eq!(copied, sent, "{:?}", app["metadata"]["name"]);
        assert_eq!(app["spec"]["rules"][0]["host"], ours["spec"]["rules"][0]["host"], "one host");
    }
    // pages sign in through authgate on the app's host; the API gets the 401 and its challenge
    let signin =
        |i: usize| apps[i]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-signin"].as_str();
    assert_eq!(signin(0), Some(format!("{public_url}/oauth2/start").as_str()));
    assert_eq!(signin(1), None);
}

#[test]
fn the_service_monitor_scrapes_the_admin_service() {
    let text = std::fs::read_to_string(common::repo().join("deploy/kubernetes/servicemonitor.yaml")).unwrap();
    let monitor: Value = serde_yaml::from_str(&text).unwrap();
    let (_, docs) = render("single");
    let admin = find(&docs, "Service", "authgate-admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], admin["spec"]["ports"][0]["name"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let wanted = monitor["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    let labels = admin["metadata"]["labels"].as_mapping().unwrap();
    assert!(wanted.iter().all(|(k, v)| labels.get(k) == Some(v)), "{wanted:?} vs {labels:?}");
}
