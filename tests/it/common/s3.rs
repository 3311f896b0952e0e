//! A real S3-compatible server for tests: s3s-fs 0.14 (crates.io) served in-process over HTTP
//! on 127.0.0.1 with an ephemeral port, with SigV4 authentication, storing into a temporary
//! folder. It runs on its own thread and Tokio runtime, so it answers whatever the test does
//! meanwhile (a current-thread runtime, blocking calls, a child `vellum` process talking to it).
//! Dropping the server stops it and removes its folder.
//!
//! Self-contained: it uses nothing else of the harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const ACCESS_KEY: &str = "vellum-test-access-key";
pub const SECRET_KEY: &str = "vellum-test-secret-key";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    addr: SocketAddr,
    root: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server with no buckets.
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("temporary folder for s3s-fs");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs on the temporary folder");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("s3s-fs".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime for s3s-fs");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        let sock = tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => match accepted {
                                Ok((sock, _)) => sock,
                                Err(_) => continue,
                            },
                        };
                        let _ = sock.set_nodelay(true);
                        let service = service.clone();
                        tokio::spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
                                .await;
                        });
                    }
                });
                rt.shutdown_background();
            })
            .expect("s3s-fs thread");
        Self {
            addr,
            root: Some(root),
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (s3s-fs keeps each bucket as a folder of its root).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir(self.root_dir().join(name)).expect("create bucket");
    }

    /// The folder s3s-fs stores everything in (every bucket, uploads in progress).
    pub fn root_dir(&self) -> &Path {
        self.root.as_ref().expect("running").path()
    }

    /// The folder holding a bucket's objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root_dir().join(bucket)
    }

    /// The environment a `vellum` server needs to keep its blobs in `bucket`.
    pub fn env(&self, bucket: &str, partition: &str) -> Vec<(&'static str, String)> {
        vec![
            ("USES3", "true".into()),
            ("FILE_BUCKET", bucket.into()),
            ("FILE_PARTITION", partition.into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT", self.endpoint()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.root.take();
    }
}
