//! The like-for-like ceiling of `scripts/load` (case p): a Pingora proxy with nothing of
//! authgate, built from the same Pingora version and features, with the same global allocator
//! and worker threads, proxying every request to one upstream over pooled keep-alive
//! connections. What authgate's cases are divided by.
//!
//! `bare_proxy LISTEN UPSTREAM THREADS`, e.g. `bare_proxy 127.0.0.1:18470 127.0.0.1:18401 2`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, threads] = args.as_slice() else {
        panic!("usage: bare_proxy LISTEN UPSTREAM THREADS");
    };
    let conf = ServerConf { threads: threads.parse().expect("THREADS is a number"), ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream: upstream.clone() });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}
