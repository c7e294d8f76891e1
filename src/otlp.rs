//! `serve --otlp-endpoint URL`: tracing spans exported over OTLP/gRPC
//! (tonic) when the binary is built with the `otlp` feature.

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The span exporter, when one was asked for; flushes on [`Exporter::shutdown`].
#[derive(Debug, Default)]
pub struct Exporter {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Exporter {
    /// Starts exporting to `endpoint` (`http://HOST:PORT`, an OTLP/gRPC
    /// collector) if given. Must run inside `runtime`'s context: the tonic
    /// client's connection lives there.
    pub fn start(
        endpoint: Option<&str>,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Exporter> {
        let Some(endpoint) = endpoint else {
            return Ok(Exporter::default());
        };
        #[cfg(feature = "otlp")]
        {
            use anyhow::Context;
            use opentelemetry_otlp::WithExportConfig;
            let _inside = runtime.enter();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .with_context(|| format!("--otlp-endpoint {endpoint}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name("mapsync")
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            Ok(Exporter {
                provider: Some(provider),
            })
        }
        #[cfg(not(feature = "otlp"))]
        {
            let _ = runtime;
            anyhow::bail!(
                "--otlp-endpoint {endpoint}: this mapsync was built without OTLP (build with `--features otlp`)"
            )
        }
    }

    /// The tracing layer that hands finished spans to the exporter (none
    /// when no endpoint was given).
    pub fn layer<S>(&self) -> Option<Box<dyn Layer<S> + Send + Sync>>
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        #[cfg(feature = "otlp")]
        {
            use opentelemetry::trace::TracerProvider as _;
            let tracer = self.provider.as_ref()?.tracer("mapsync");
            Some(Box::new(tracing_opentelemetry::layer().with_tracer(tracer)))
        }
        #[cfg(not(feature = "otlp"))]
        None
    }

    /// Exports the spans still queued and stops (call while the runtime the
    /// exporter started in still runs).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: OTLP export at exit: {error}");
        }
    }
}
