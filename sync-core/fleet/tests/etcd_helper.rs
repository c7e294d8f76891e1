//! The test etcd itself: it starts healthy, keeps its data across a
//! restart on the same ports, and is gone when dropped.

mod etcd;

use etcd::{Etcd, require_etcd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_starts_restarts_with_its_data_and_stops_on_drop() {
    if !require_etcd() {
        return;
    }
    let mut etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    client.put("k", "v1", None).await.expect("put");
    etcd.stop();
    assert!(
        client.get("k", None).await.is_err(),
        "a stopped etcd answers nothing"
    );
    etcd.resume().await;
    let mut client = etcd.client().await;
    let got = client.get("k", None).await.expect("get after restart");
    assert_eq!(got.kvs()[0].value(), b"v1", "data kept across the restart");
    drop(etcd);
    assert!(
        client.get("k", None).await.is_err(),
        "etcd is gone once dropped"
    );
}
