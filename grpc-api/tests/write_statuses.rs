//! Every status a write can get, as a client receives it from a real server
//! (Unix socket, fake kernel task): the server's own checks, which send
//! nothing to the kernel task, and the kernel task's answers with their
//! metadata.

mod write_support;

use bytes::Bytes;
use mapsync_core::control::{CommandError, Refusal};
use mapsync_grpc::pb;
use mapsync_grpc::peer::WritePolicy;
use mapsync_grpc::service::write_status::{CURRENT_MOD_REVISION, ERRNO, FAILED_OP, metadata_u64};
use tonic::Code;
use write_support::{WriteServer, key, put, txn_put};

#[tokio::test]
async fn bad_requests_are_refused_before_any_command_is_sent() {
    let mut server = WriteServer::start(Some(WritePolicy::default())).await;
    let epoch = server.store.epoch().0;
    let cases: Vec<(pb::PutRequest, Code, &str)> = vec![
        (put("nope", 1, b"xx"), Code::NotFound, "unknown map `nope`"),
        (
            pb::PutRequest {
                key: Bytes::from_static(&[1, 2]),
                ..put("flows", 1, b"xx")
            },
            Code::InvalidArgument,
            "key: map `flows` takes 4 bytes, got 2",
        ),
        (
            put("flows", 1, b"xyz"),
            Code::InvalidArgument,
            "value: map `flows` takes 2 bytes, got 3",
        ),
        (
            pb::PutRequest {
                mode: 7,
                ..put("flows", 1, b"xx")
            },
            Code::InvalidArgument,
            "mode: unknown value 7",
        ),
        (
            pb::PutRequest {
                expect_mod_revision: Some(1),
                epoch: epoch ^ 1,
                ..put("flows", 1, b"xx")
            },
            Code::FailedPrecondition,
            "is not this server's",
        ),
    ];
    for (request, code, message) in cases {
        let status = server.client.put(request).await.expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(message), "{status:?}");
    }
    let status = server
        .client
        .delete(pb::DeleteRequest {
            map: "flows".into(),
            key: Bytes::from_static(&[1]),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = server
        .client
        .txn(pb::TxnRequest::default())
        .await
        .expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = server
        .client
        .txn(pb::TxnRequest {
            success: (0..129).map(|i| txn_put("flows", i, b"zz")).collect(),
            ..Default::default()
        })
        .await
        .expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at most 128"), "{status:?}");
    assert_eq!(
        server.fake.received(),
        0,
        "no command reached the kernel task"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_kernel_side_s_refusals_reach_the_client_with_codes_and_metadata() {
    let mut server = WriteServer::start(Some(WritePolicy::default())).await;
    // compare-and-swap against the key's real mod revision
    let current = server
        .store
        .snapshot()
        .map("flows")
        .expect("flows")
        .entry(&key(1))
        .expect("key 1")
        .mod_revision;
    let status = server
        .client
        .put(pb::PutRequest {
            expect_mod_revision: Some(current + 5),
            ..put("flows", 1, b"xx")
        })
        .await
        .expect_err("mismatch");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(metadata_u64(&status, CURRENT_MOD_REVISION), Some(current));
    assert!(
        status.message().contains(&format!("is {current}")),
        "{status:?}"
    );
    let status = server
        .client
        .put(pb::PutRequest {
            mode: pb::PutMode::NoExist as i32,
            ..put("flows", 1, b"xx")
        })
        .await
        .expect_err("exists");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(metadata_u64(&status, ERRNO), Some(libc::EEXIST as u64));
    let status = server
        .client
        .put(pb::PutRequest {
            mode: pb::PutMode::Exist as i32,
            ..put("flows", 5, b"xx")
        })
        .await
        .expect_err("absent");
    assert_eq!(status.code(), Code::NotFound);
    // a Txn refused at its op 2: nothing written, the op named
    let before = server.store.revision();
    let status = server
        .client
        .txn(pb::TxnRequest {
            success: vec![
                txn_put("cfg", 1, b"c1"),
                txn_put("cfg", 2, b"c2"),
                pb::TxnOp {
                    op: Some(pb::txn_op::Op::Delete(pb::TxnDelete {
                        map: "cfg".into(),
                        key: key(3),
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .expect_err("refused op");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(metadata_u64(&status, FAILED_OP), Some(2));
    assert_eq!(server.store.revision(), before);
    // a full map
    for i in 0..4 {
        server.client.put(put("cfg", i, b"ff")).await.expect("fill");
    }
    let status = server
        .client
        .put(put("cfg", 9, b"ff"))
        .await
        .expect_err("full");
    assert_eq!(status.code(), Code::ResourceExhausted);

    // every other kernel-side error, forced
    let forced = [
        (CommandError::Stopped, Code::Unavailable),
        (
            CommandError::Kernel {
                reason: "EBADF".into(),
            },
            Code::Unavailable,
        ),
        (
            CommandError::InvalidArgument {
                reason: "per-CPU".into(),
            },
            Code::InvalidArgument,
        ),
        (
            CommandError::UnknownMap {
                name: "flows".into(),
            },
            Code::NotFound,
        ),
        (
            CommandError::Refused {
                map: "flows".into(),
                op: None,
                what: "put".into(),
                refusal: Refusal::IndexOutOfRange,
                errno: libc::E2BIG,
            },
            Code::InvalidArgument,
        ),
        (
            CommandError::Refused {
                map: "flows".into(),
                op: None,
                what: "put".into(),
                refusal: Refusal::Other,
                errno: libc::EPERM,
            },
            Code::Internal,
        ),
        (
            CommandError::Unsupported {
                command: "Put".into(),
            },
            Code::Unimplemented,
        ),
    ];
    for (error, code) in forced {
        let text = error.to_string();
        server.fake.fail_next(error);
        let status = server
            .client
            .put(put("flows", 1, b"ok"))
            .await
            .expect_err("forced");
        assert_eq!(status.code(), code, "{text}");
        assert_eq!(status.message(), text);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_without_a_command_handle_accepts_no_writes() {
    let mut server = WriteServer::start(None).await;
    let status = server
        .client
        .put(put("flows", 1, b"xx"))
        .await
        .expect_err("read-only");
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("does not accept writes"));
    let status = server
        .client
        .apply(tokio_stream::iter(Vec::<pb::ApplyRequest>::new()))
        .await
        .expect_err("read-only");
    assert_eq!(status.code(), Code::Unimplemented);
    server.shutdown().await;
}
