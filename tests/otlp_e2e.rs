//! `serve --otlp-endpoint` (feature `otlp`): a real serve on a real kernel
//! exports its spans to an OTLP/gRPC collector run by the test, among them
//! a `write` span for a Put, a `watch` span for a watch and `resync` spans
//! for reconciles.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Server, map_arg, pin};
use mapsync_test_support::{self as support, PinDir};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

/// A received span: its service, name and string attributes.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    attributes: BTreeMap<String, String>,
}

/// A collector that hands every span it receives to a channel.
struct Collector(mpsc::Sender<Span>);

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect();
                    let _ = self.0.send(Span {
                        service: service.clone(),
                        name: span.name,
                        attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[test]
fn spans_of_a_write_and_a_watch_reach_the_collector() {
    if !support::require_kernel() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (spans_tx, spans) = mpsc::channel();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the collector");
    let addr = listener.local_addr().expect("address");
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(spans_tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let pins = PinDir::new("otlp-e2e");
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 16, "flows");
    let endpoint = format!("http://{addr}");
    let mut server = Server::start_with(
        &pins,
        &[map_arg("flows", &flows)],
        &["--otlp-endpoint", &endpoint, "--reconcile-interval", "0.2"],
    );
    let (watch, lines) = server.spawn_cli(&["watch", "flows", "--json"]);
    let mut watch = common::ChildGuard(watch);
    let put = server.cli(&["put", "flows", "01000000", "0102030405060708"]);
    assert!(put.status.success(), "{put:?}");
    lines.next(Duration::from_secs(10));
    // a few reconciles (one resync span per map each)
    std::thread::sleep(Duration::from_millis(600));
    let _ = watch.0.kill();
    let _ = watch.0.wait();
    // the batch exporter sends what is left at exit
    server.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.is_running() {
        assert!(Instant::now() < deadline, "serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut received = Vec::new();
    while let Ok(span) = spans.recv_timeout(Duration::from_secs(2)) {
        received.push(span);
    }
    let names: Vec<&str> = received.iter().map(|s| s.name.as_str()).collect();
    assert!(
        received.iter().all(|span| span.service == "mapsync"),
        "{received:?}"
    );
    let write = received
        .iter()
        .find(|span| {
            span.name == "write" && span.attributes.get("map").map(String::as_str) == Some("flows")
        })
        .unwrap_or_else(|| panic!("no write span for flows among {names:?}"));
    assert!(write.attributes.contains_key("outcome"), "{write:?}");
    assert!(names.contains(&"watch"), "no watch span among {names:?}");
    assert!(names.contains(&"ingest"), "no ingest span among {names:?}");
    assert!(
        received.iter().any(|span| span.name == "resync"
            && span.attributes.get("map").map(String::as_str) == Some("flows")
            && span.attributes.get("periodic").map(String::as_str) == Some("BoolValue(true)")),
        "no resync span of a reconcile of flows among {names:?}"
    );
}
