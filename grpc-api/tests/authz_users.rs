//! The policy file with real identities: a user and a group created by the
//! test, a client process running as that user (this test binary again, as
//! the `child_reader` helper) over the Unix socket, the policy deciding from
//! the peer credentials. Needs root; under `CI=true` a failure to create the
//! user fails the test.

mod authz_support;
#[path = "write_support/identity.rs"]
mod identity;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use authz_support::AuthServer;
use authz_support::write_support::{key, put, unix_channel};
use mapsync_grpc::pb::{self, watch_request::Request as Req, watch_response::Kind};
use tonic::Code;

const CHILD_SOCKET: &str = "MAPSYNC_AUTHZ_CHILD_SOCKET";

fn code<T>(result: Result<T, tonic::Status>) -> i32 {
    result.map_or_else(|status| status.code() as i32, |_| 0)
}

/// The code a one-watch stream's create on `maps` ends with: 0 created, or
/// the canceled code, or the stream's own status code.
async fn watch_code(
    client: &mut pb::map_sync_client::MapSyncClient<tonic::transport::Channel>,
    maps: &[&str],
) -> i32 {
    let create = pb::WatchRequest {
        request: Some(Req::Create(pb::WatchCreateRequest {
            maps: maps.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        })),
    };
    // the stream stays open (pending) after the create
    let requests = futures::stream::iter(vec![create]).chain(futures::stream::pending());
    let mut responses = match client.watch(requests).await {
        Ok(responses) => responses.into_inner(),
        Err(status) => return status.code() as i32,
    };
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), responses.message());
        match next.await.expect("a response in time") {
            Err(status) => return status.code() as i32,
            Ok(None) => return -1,
            Ok(Some(response)) => match response.kind {
                Some(Kind::Created(_)) => return 0,
                Some(Kind::Canceled(canceled)) => return canceled.code,
                _ => {}
            },
        }
    }
}

use futures::StreamExt;

/// Not a test: the client side of the test below, run in a child process as
/// another user. Prints `MAPS name,name` and `CODES` of: Get flows, Put
/// flows, Get cfg, Watch [flows, cfg], Watch [], Watch [flows].
#[test]
#[ignore = "the child process of a_group_member_reads_one_map_and_sees_nothing_else"]
fn child_reader() {
    let Some(socket) = std::env::var_os(CHILD_SOCKET) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (maps, codes) = runtime.block_on(async {
        let channel = unix_channel(Path::new(&socket)).await;
        let mut client = pb::map_sync_client::MapSyncClient::new(channel);
        let maps = match client.list_maps(pb::ListMapsRequest::default()).await {
            Ok(reply) => {
                let names: Vec<String> = reply
                    .into_inner()
                    .maps
                    .into_iter()
                    .map(|m| m.name)
                    .collect();
                names.join(",")
            }
            Err(status) => format!("error {}", status.code() as i32),
        };
        let get = |map: &str| pb::GetRequest {
            map: map.into(),
            key: key(0),
            ..Default::default()
        };
        let codes = vec![
            code(client.get(get("flows")).await),
            code(client.put(put("flows", 5, b"ch")).await),
            code(client.get(get("cfg")).await),
            watch_code(&mut client, &["flows", "cfg"]).await,
            watch_code(&mut client, &[]).await,
            watch_code(&mut client, &["flows"]).await,
        ];
        (maps, codes)
    });
    let codes: Vec<String> = codes.iter().map(ToString::to_string).collect();
    writeln!(std::io::stdout(), "MAPS {maps}\nCODES {}", codes.join(" ")).expect("stdout");
}

/// Runs `child_reader` as `uid`/`gid` with `groups`: its MAPS and CODES.
fn run_child(socket: &Path, uid: u32, gid: u32, groups: &[u32]) -> (String, Vec<Code>) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "child_reader",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SOCKET, socket);
    let stdout = tokio::task::block_in_place(|| identity::run_as(command, uid, gid, groups));
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.split_once(prefix).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no {prefix} line in {stdout}"))
            .to_owned()
    };
    let codes = line("CODES ")
        .split(' ')
        .map(|code| Code::from(code.parse::<i32>().expect("a code")))
        .collect();
    (line("MAPS "), codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_reads_one_map_and_sees_nothing_else() {
    let Some(who) = identity::TestIdentity::create() else {
        return;
    };
    assert_ne!(who.uid, 0);
    let policy = format!(
        "[users.flows-reader]\ngids = [{}]\nroles = [\"read-flows\"]\n\n\
         [roles.read-flows]\nread = [\"flows\"]\n",
        who.extra_gid
    );
    let server = AuthServer::start(&policy, None).await;
    let revision = server.store.revision();

    let (maps, codes) = run_child(&server.socket, who.uid, who.gid, &[who.extra_gid]);
    assert_eq!(maps, "flows", "ListMaps shows only the readable map");
    assert_eq!(
        codes,
        vec![
            Code::Ok,               // Get flows
            Code::PermissionDenied, // Put flows
            Code::PermissionDenied, // Get cfg
            Code::PermissionDenied, // Watch [flows, cfg]: refused as a whole
            Code::PermissionDenied, // Watch every map
            Code::Ok,               // Watch [flows]
        ]
    );
    assert_eq!(server.store.revision(), revision, "nothing was written");
    assert_eq!(server.fake.received(), 0, "no command was sent");

    // the same user outside the group is nobody the policy knows
    let (maps, codes) = run_child(&server.socket, who.uid, who.gid, &[]);
    let unauthenticated = Code::Unauthenticated as i32;
    assert_eq!(maps, format!("error {unauthenticated}"));
    assert!(
        codes.iter().all(|code| *code == Code::Unauthenticated),
        "{codes:?}"
    );
    let refusals = server.authz.refusals();
    assert_eq!(refusals.permission_denied(), 4);
    assert_eq!(refusals.unauthenticated(), 7);

    // root over the Unix socket may do everything under any policy
    let mut root = server.root_client().await;
    root.put(put("cfg", 1, b"r1")).await.expect("root writes");
    server.shutdown().await;
}
