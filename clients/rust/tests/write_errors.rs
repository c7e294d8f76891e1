//! The write calls against a fake server that answers canned statuses and
//! metadata (no kernel, no mirror): what the client sends, and how every
//! refusal becomes a typed error users can match on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mapsync_api as pb;
use mapsync_api::map_sync_server::{MapSync, MapSyncServer};
use mapsync_client::{
    ApplyEntry, ApplyMode, ApplyOptions, Client, ClientError, Compare, CompareResult,
    DeleteOptions, PutMode, PutOptions, ReadOptions, Txn, TxnOp,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

const EPOCH: u64 = 0x6b6c_68d7_566f_d199;

/// What the fake saw.
#[derive(Default)]
struct Seen {
    put: Option<pb::PutRequest>,
    delete: Option<pb::DeleteRequest>,
    txn: Option<pb::TxnRequest>,
    get: Option<pb::GetRequest>,
    /// Per Apply message: its encoded size and entry count.
    apply_messages: Vec<(usize, usize)>,
    apply_first: Option<pb::ApplyRequest>,
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Seen>>,
}

fn header(revision: u64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        epoch: EPOCH,
        revision,
    })
}

fn with_metadata(mut status: Status, key: &'static str, value: u64) -> Status {
    status.metadata_mut().insert(
        key,
        MetadataValue::try_from(value.to_string()).expect("ascii"),
    );
    status
}

/// The canned refusal a map name asks for; `None`: success.
fn refusal(map: &str) -> Option<Status> {
    Some(match map {
        "exists" => Status::already_exists("map `exists`: the key is present"),
        "absent" => Status::not_found("map `absent`: the key is absent"),
        "nope" => Status::not_found("unknown map `nope`"),
        "cas" => with_metadata(
            Status::failed_precondition("map `cas`: the key's mod revision changed"),
            "mapsync-current-mod-revision",
            17,
        ),
        // no metadata: the client reads the number from the message
        "cas-text" => Status::failed_precondition(
            "map `cas-text`: the key's mod revision is 23, not the expected 5",
        ),
        "versioned" => with_metadata(
            Status::failed_precondition("map `versioned`: the live version changed"),
            "mapsync-live-version",
            9,
        ),
        "plain" => Status::failed_precondition(
            "map `plain` is not switchable (serve it with --switch to use Apply)",
        ),
        "denied" => Status::permission_denied("writes need uid 0 or --write-uid"),
        "full" => Status::resource_exhausted("map `full` is full"),
        "small" => Status::invalid_argument("map `small` has 4-byte keys, got 3 bytes"),
        "txn-full" => with_metadata(
            Status::resource_exhausted("map `txn-full`: the kernel refused put (op 2): MapFull"),
            "mapsync-failed-op",
            2,
        ),
        _ => return None,
    })
}

#[tonic::async_trait]
impl MapSync for Fake {
    async fn list_maps(
        &self,
        _request: Request<pb::ListMapsRequest>,
    ) -> Result<Response<pb::ListMapsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        let revision = request.min_revision;
        self.seen.lock().expect("lock").get = Some(request);
        Ok(Response::new(pb::GetResponse {
            header: header(revision),
            found: true,
            value: vec![42, 0, 0, 0].into(),
            mod_revision: revision,
            value_json: String::new(),
        }))
    }

    type ListStream = tokio_stream::Empty<Result<pb::ListResponse, Status>>;

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchStream = tokio_stream::Empty<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        if let Some(status) = refusal(&request.map) {
            return Err(status);
        }
        let prev = request.prev_value.then(|| pb::PrevValue {
            found: true,
            value: vec![1, 0, 0, 0].into(),
            mod_revision: 40,
        });
        self.seen.lock().expect("lock").put = Some(request);
        Ok(Response::new(pb::PutResponse {
            header: header(41),
            prev,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        if let Some(status) = refusal(&request.map) {
            return Err(status);
        }
        let prev = request.prev_value.then(|| pb::PrevValue {
            found: false,
            value: Default::default(),
            mod_revision: 0,
        });
        self.seen.lock().expect("lock").delete = Some(request);
        Ok(Response::new(pb::DeleteResponse {
            header: header(50),
            prev,
        }))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        let map = request
            .success
            .first()
            .and_then(|op| match &op.op {
                Some(pb::txn_op::Op::Put(put)) => Some(put.map.clone()),
                Some(pb::txn_op::Op::Delete(delete)) => Some(delete.map.clone()),
                None => None,
            })
            .unwrap_or_default();
        if let Some(status) = refusal(&map) {
            return Err(status);
        }
        let ran = request.success.len();
        self.seen.lock().expect("lock").txn = Some(request);
        Ok(Response::new(pb::TxnResponse {
            header: header(60),
            succeeded: false,
            prev: vec![pb::PrevValue::default(); ran],
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Err(Status::unimplemented("not part of this fake"))
    }

    async fn apply(
        &self,
        request: Request<Streaming<pb::ApplyRequest>>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let mut stream = request.into_inner();
        let mut entries = 0u64;
        let mut first = None;
        while let Some(message) = stream.message().await? {
            let size = prost::Message::encoded_len(&message);
            entries += message.entries.len() as u64;
            self.seen
                .lock()
                .expect("lock")
                .apply_messages
                .push((size, message.entries.len()));
            if first.is_none() {
                first = Some(message);
            }
        }
        let first = first.ok_or_else(|| Status::invalid_argument("empty Apply stream"))?;
        if let Some(status) = refusal(&first.map) {
            return Err(status);
        }
        let version = first.expect_version.unwrap_or(0) + 1;
        self.seen.lock().expect("lock").apply_first = Some(first);
        Ok(Response::new(pb::ApplyResponse {
            header: header(70),
            version,
            entries,
            changed: entries,
            switch_ns: 15_000_000,
        }))
    }
}

/// A fake on 127.0.0.1:0 that decodes requests up to the real server's cap
/// (64 KiB), and a client connected to it.
async fn fake() -> (Client, Arc<Mutex<Seen>>) {
    let fake = Fake::default();
    let seen = fake.seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let service = MapSyncServer::new(fake).max_decoding_message_size(64 << 10);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let client = Client::connect(&address.to_string())
        .await
        .expect("connect to the fake");
    (client, seen)
}

#[tokio::test]
async fn a_put_sends_its_options_and_reads_back_at_its_revision() {
    let (mut client, seen) = fake().await;
    let options = PutOptions::new()
        .mode(PutMode::Exist)
        .expect_mod_revision(40, EPOCH)
        .prev_value(true)
        .timeout(Duration::from_secs(5));
    let written = client
        .put_with("cfg", &[1, 0, 0, 0], &[42, 0, 0, 0], &options)
        .await
        .expect("put");
    assert_eq!((written.epoch, written.revision), (EPOCH, 41));
    let prev = written.prev.expect("asked for the previous value");
    assert_eq!(prev.value.as_deref(), Some(&[1u8, 0, 0, 0][..]));
    assert_eq!(prev.mod_revision, 40);
    let sent = seen.lock().expect("lock").put.take().expect("a put");
    assert_eq!(sent.map, "cfg");
    assert_eq!(&sent.key[..], &[1, 0, 0, 0]);
    assert_eq!(&sent.value[..], &[42, 0, 0, 0]);
    assert_eq!(sent.mode, pb::PutMode::Exist as i32);
    assert_eq!((sent.expect_mod_revision, sent.epoch), (Some(40), EPOCH));
    assert!(sent.prev_value);

    // read-your-writes: the read waits for the write's revision
    let read = ReadOptions {
        min_revision: written.revision,
        epoch: written.epoch,
        ..Default::default()
    };
    let value = client
        .get_with("cfg", &[1, 0, 0, 0], &read)
        .await
        .expect("get");
    assert_eq!(value.revision, 41);
    let get = seen.lock().expect("lock").get.take().expect("a get");
    assert_eq!((get.min_revision, get.epoch), (41, EPOCH));

    // a plain put: no compare-and-swap, no previous value asked
    let plain = client
        .put("cfg", &[2, 0, 0, 0], &[1, 0, 0, 0])
        .await
        .expect("put");
    assert_eq!(plain.prev, None);
    let sent = seen.lock().expect("lock").put.take().expect("a put");
    assert_eq!(
        (sent.mode, sent.expect_mod_revision, sent.prev_value),
        (0, None, false)
    );
}

#[tokio::test]
async fn a_delete_carries_its_compare_and_swap() {
    let (mut client, seen) = fake().await;
    let options = DeleteOptions::new()
        .expect_mod_revision(0, 0)
        .prev_value(true);
    let written = client
        .delete_with("cfg", &[1, 0, 0, 0], &options)
        .await
        .expect("delete");
    assert_eq!(written.revision, 50);
    assert_eq!(
        written.prev.expect("asked"),
        mapsync_client::Previous {
            value: None,
            mod_revision: 0
        }
    );
    let sent = seen.lock().expect("lock").delete.take().expect("a delete");
    assert_eq!(sent.expect_mod_revision, Some(0), "0 means: must not exist");
}

#[tokio::test]
async fn every_refusal_is_a_typed_error() {
    let (mut client, _seen) = fake().await;
    let put = |map: &'static str| {
        let mut client = client.clone();
        async move { client.put(map, &[0; 4], &[0; 4]).await.expect_err(map) }
    };
    assert!(matches!(
        put("exists").await,
        ClientError::AlreadyExists {
            failed_op: None,
            ..
        }
    ));
    assert!(matches!(put("absent").await, ClientError::NotFound { .. }));
    assert!(matches!(put("nope").await, ClientError::UnknownMap { .. }));
    assert!(matches!(
        put("cas").await,
        ClientError::ModRevisionMismatch { current: 17, .. }
    ));
    assert!(matches!(
        put("cas-text").await,
        ClientError::ModRevisionMismatch { current: 23, .. }
    ));
    assert!(matches!(
        put("denied").await,
        ClientError::PermissionDenied { .. }
    ));
    assert!(matches!(put("full").await, ClientError::MapFull { .. }));
    let small = put("small").await;
    assert!(
        matches!(small, ClientError::InvalidArgument { .. }),
        "{small:?}"
    );
    assert_eq!(
        small.to_string(),
        "map `small` has 4-byte keys, got 3 bytes (invalid argument)"
    );
    assert_eq!(small.code(), Some(tonic::Code::InvalidArgument));
    let error = client.delete("absent", &[0; 4]).await.expect_err("absent");
    assert!(matches!(error, ClientError::NotFound { .. }), "{error:?}");

    let versioned = client
        .apply("versioned", [], &ApplyOptions::new().expect_version(3))
        .await
        .expect_err("version");
    assert!(
        matches!(versioned, ClientError::VersionMismatch { live: 9, .. }),
        "{versioned:?}"
    );
    let plain = client
        .apply("plain", [], &ApplyOptions::new())
        .await
        .expect_err("plain");
    assert!(
        matches!(plain, ClientError::NotSwitchable { .. }),
        "{plain:?}"
    );
}

#[tokio::test]
async fn a_txn_sends_compares_and_both_branches_and_names_a_refused_op() {
    let (mut client, seen) = fake().await;
    let txn = Txn::new()
        .when(Compare::mod_revision(
            "cfg",
            vec![1u8; 4],
            CompareResult::Greater,
            5,
        ))
        .when(Compare::value(
            "cfg",
            vec![2u8; 4],
            CompareResult::NotEqual,
            vec![0u8; 4],
        ))
        .when(Compare::exists("cfg", vec![3u8; 4], false))
        .then(TxnOp::put("cfg", vec![1u8; 4], vec![9u8; 4]))
        .then(TxnOp::delete("cfg", vec![2u8; 4]))
        .otherwise(TxnOp::put("cfg", vec![4u8; 4], vec![8u8; 4]))
        .epoch(EPOCH)
        .prev_value(true);
    let result = client.txn(txn).await.expect("txn");
    assert!(!result.succeeded, "a failed compare is no error");
    assert_eq!((result.revision, result.prev.len()), (60, 2));
    let sent = seen.lock().expect("lock").txn.take().expect("a txn");
    assert_eq!(sent.compare.len(), 3);
    assert_eq!(sent.compare[0].result, pb::compare::Result::Greater as i32);
    assert_eq!(
        sent.compare[0].target,
        Some(pb::compare::Target::ModRevision(5))
    );
    assert_eq!(
        sent.compare[2].target,
        Some(pb::compare::Target::Exists(false))
    );
    assert_eq!((sent.success.len(), sent.failure.len()), (2, 1));
    assert!(matches!(
        sent.success[1].op,
        Some(pb::txn_op::Op::Delete(_))
    ));
    assert_eq!((sent.epoch, sent.prev_value), (EPOCH, true));

    let refused = Txn::new()
        .then(TxnOp::put("txn-full", vec![0u8; 4], vec![0u8; 4]))
        .then(TxnOp::put("txn-full", vec![1u8; 4], vec![0u8; 4]))
        .then(TxnOp::put("txn-full", vec![2u8; 4], vec![0u8; 4]));
    let error = client.txn(refused).await.expect_err("refused");
    assert!(
        matches!(
            error,
            ClientError::MapFull {
                failed_op: Some(2),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.failed_op(), Some(2));
}

#[tokio::test]
async fn a_large_apply_travels_in_messages_under_the_request_cap() {
    let (mut client, seen) = fake().await;
    let set: Vec<ApplyEntry> = (0..20_000u32)
        .map(|i| ApplyEntry::put(i.to_ne_bytes().to_vec(), vec![0xab; 32]))
        .chain([ApplyEntry::delete(vec![0xff; 4])])
        .collect();
    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen_progress = progress.clone();
    let options = ApplyOptions::new().mode(ApplyMode::Merge).expect_version(6);
    let applied = client
        .apply_with_progress("rules", set, &options, move |sent, total| {
            seen_progress.lock().expect("lock").push((sent, total));
        })
        .await
        .expect("apply");
    assert_eq!(
        (applied.revision, applied.version, applied.entries),
        (70, 7, 20_001)
    );
    assert_eq!(applied.switch, Duration::from_millis(15));
    let seen = seen.lock().expect("lock");
    assert!(
        seen.apply_messages.len() > 10,
        "{} messages",
        seen.apply_messages.len()
    );
    assert!(
        seen.apply_messages
            .iter()
            .all(|(size, _)| *size <= 64 << 10)
    );
    let first = seen.apply_first.as_ref().expect("first message");
    assert_eq!(first.map, "rules");
    assert_eq!(first.mode, pb::ApplyMode::Merge as i32);
    assert_eq!(first.expect_version, Some(6));
    let progress = progress.lock().expect("lock");
    assert_eq!(progress.last(), Some(&(20_001, 20_001)));
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0));
}
