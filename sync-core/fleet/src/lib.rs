//! mapsync's fleet follower: follows an etcd prefix into one mirrored map
//! through the write contract. (Work in progress: the follower lands next.)
