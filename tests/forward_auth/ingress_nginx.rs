//! What the ingress-nginx controller makes of deploy/kubernetes/overlays/ingress-nginx's
//! Ingresses: the nginx configuration its template (rootfs/etc/nginx/template/nginx.tmpl)
//! renders for `auth-url`, `auth-signin` and `auth-response-headers`, reduced to the directives
//! that decide what authgate and the app receive. Written from the annotations, so that what the
//! test runs is what the manifests say; the placeholders are the other examples' (__LISTEN__,
//! __AUTHGATE__, __APP__, __RUNTIME__).

use serde::Deserialize;
use serde_yaml::Value;

/// The overlay's Ingresses: authgate's (ingress.yaml) and the app's (app-ingress.yaml).
fn ingresses() -> Vec<Value> {
    let dir = super::common::repo().join("deploy/kubernetes/overlays/ingress-nginx");
    let mut docs = Vec::new();
    for file in ["ingress.yaml", "app-ingress.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        docs.extend(serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()));
    }
    assert!(docs.iter().all(|d| d["kind"] == "Ingress"));
    docs
}

/// The annotation `name` of an Ingress.
fn annotation<'a>(ingress: &'a Value, name: &str) -> Option<&'a str> {
    ingress["metadata"]["annotations"][format!("nginx.ingress.kubernetes.io/{name}")].as_str()
}

/// The controller's `buildAuthSignURL`: the page's URL added as the redirect parameter (`rd`,
/// or `auth-signin-redirect-param`) unless the URL names it with a value.
fn sign_in_url(signin: &str, param: &str) -> String {
    let rd = format!("{param}=$pass_access_scheme://$http_host$escaped_request_uri");
    match signin.split_once('?') {
        None => format!("{signin}?{rd}"),
        Some((_, query))
            if query.split('&').any(|p| p.len() > param.len() + 1 && p.starts_with(&format!("{param}="))) =>
        {
            signin.to_owned()
        }
        Some(_) => format!("{signin}&{rd}"),
    }
}

/// One `location` block per path as the controller writes it: exact paths `=`, a prefix
/// `/p` both `/p/` and `= /p`.
fn locations(path: &str, exact: bool, body: &str) -> String {
    match (exact, path) {
        (true, _) => format!("location = {path} {{\n{body}}}\n"),
        (false, "/") => format!("location / {{\n{body}}}\n"),
        (false, _) => {
            let p = path.trim_end_matches('/');
            format!("location {p}/ {{\n{body}}}\nlocation = {p} {{\n{body}}}\n")
        }
    }
}

/// nginx's configuration for the overlay's Ingresses (one host: the test's).
pub fn conf() -> String {
    let mut server = String::new();
    let mut n = 0;
    for ingress in ingresses() {
        let auth_url = annotation(&ingress, "auth-url");
        let signin = annotation(&ingress, "auth-signin");
        // the controller's default for the auth location's and the app location's buffers
        let buffer = annotation(&ingress, "proxy-buffer-size").unwrap_or("4k");
        let redirect_param = annotation(&ingress, "auth-signin-redirect-param").unwrap_or("rd");
        let copied: Vec<&str> = annotation(&ingress, "auth-response-headers")
            .map(|h| h.split(',').map(str::trim).filter(|h| !h.is_empty()).collect())
            .unwrap_or_default();
        for rule in ingress["spec"]["rules"].as_sequence().unwrap() {
            for p in rule["http"]["paths"].as_sequence().unwrap() {
                n += 1;
                let path = p["path"].as_str().unwrap();
                let exact = p["pathType"] == "Exact";
                let upstream = match p["backend"]["service"]["name"].as_str().unwrap() {
                    "authgate" => "__AUTHGATE__",
                    _ => "__APP__",
                };
                let mut body = String::new();
                if let Some(url) = auth_url {
                    // the auth subrequest's location
                    let rest = url.strip_prefix("http://").expect("an in-cluster http auth-url");
                    let (host, auth_path) = rest.split_at(rest.find('/').unwrap());
                    server.push_str(&format!(
                        "location = /_external-auth-{n} {{
    internal;
    proxy_pass_request_body off;
    proxy_set_header Content-Length \"\";
    proxy_set_header X-Forwarded-Proto \"\";
    proxy_set_header X-Request-ID $request_id;
    proxy_set_header Host {host};
    proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
    proxy_set_header X-Original-Method $request_method;
    proxy_set_header X-Sent-From \"nginx-ingress-controller\";
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Auth-Request-Redirect $request_uri;
    proxy_buffering off;
    proxy_buffer_size {buffer};
    proxy_buffers 4 {buffer};
    proxy_http_version 1.1;
    proxy_pass_request_headers on;
    # the service name {host} is authgate's address here
    set $target http://__AUTHGATE__{auth_path};
    proxy_pass $target;
}}
"
                    ));
                    body.push_str(&format!(
                        "    auth_request /_external-auth-{n};
    auth_request_set $auth_cookie $upstream_http_set_cookie;
    add_header Set-Cookie $auth_cookie;
"
                    ));
                    for (i, name) in copied.iter().enumerate() {
                        let var = name.to_ascii_lowercase().replace('-', "_");
                        body.push_str(&format!(
                            "    auth_request_set $authHeader{i} $upstream_http_{var};\n    proxy_set_header '{name}' $authHeader{i};\n"
                        ));
                    }
                    if let Some(signin) = signin {
                        // the rule's host is the test's origin (plain HTTP on a port)
                        let host = rule["host"].as_str().unwrap();
                        let url = sign_in_url(signin, redirect_param).replacen(
                            &format!("https://{host}"),
                            "__ORIGIN__",
                            1,
                        );
                        server.push_str(&format!(
                            "location @signin-{n} {{\n    internal;\n    add_header Set-Cookie $auth_cookie;\n    return 302 {url};\n}}\n"
                        ));
                        body.push_str(&format!(
                            "    set_escape_uri $escaped_request_uri $request_uri;\n    error_page 401 = @signin-{n};\n"
                        ));
                    }
                }
                body.push_str(&format!(
                    "    proxy_set_header Host $http_host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection \"\";
    proxy_set_header X-Request-ID $request_id;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Host $http_host;
    proxy_set_header X-Forwarded-Port $server_port;
    proxy_set_header X-Forwarded-Proto $pass_access_scheme;
    proxy_set_header X-Scheme $pass_access_scheme;
    proxy_buffer_size {buffer};
    proxy_buffers 4 {buffer};
    proxy_http_version 1.1;
    proxy_pass http://{upstream};
"
                ));
                server.push_str(&locations(path, exact, &body));
            }
        }
    }
    format!(
        "load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_set_misc_module.so;
worker_processes 1;
pid __RUNTIME__/nginx.pid;
error_log __RUNTIME__/error.log;
events {{ worker_connections 1024; }}
http {{
access_log off;
client_body_temp_path __RUNTIME__;
proxy_temp_path __RUNTIME__;
fastcgi_temp_path __RUNTIME__;
uwsgi_temp_path __RUNTIME__;
scgi_temp_path __RUNTIME__;
map '' $pass_access_scheme {{ default $scheme; }}
server {{
listen __LISTEN__;
{server}}}
}}
"
    )
}
