//! Contexts in cloud buckets (`s3://`, `gs://`, `az://`, Azure's blob URLs):
//! one object downloaded with object_store, whose builders read each cloud's
//! standard credentials from the environment (AWS_*, instance metadata and web
//! identity; GOOGLE_APPLICATION_CREDENTIALS and the metadata server;
//! AZURE_STORAGE_*), plus Kaniko's own `S3_ENDPOINT` and `S3_FORCE_PATH_STYLE`.

use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// A bucket download that failed, with the cause in one line.
#[derive(Debug, thiserror::Error)]
#[error("--context {url}: {cause}")]
pub struct BucketError {
    url: String,
    cause: String,
}

/// What Kaniko reads when a bucket names no object.
const DEFAULT_OBJECT: &str = "context.tar.gz";

/// Downloads the object `url` names into `dest`.
pub(super) async fn download(url: &str, dest: &Path) -> Result<(), BucketError> {
    let fail = |cause: String| BucketError {
        url: url.to_string(),
        cause,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(e.to_string()))?;
    let (scheme, mut path) = ObjectStoreScheme::parse(&parsed).map_err(|e| fail(one_line(&e)))?;
    if path.as_ref().is_empty() {
        path = object_store::path::Path::from(DEFAULT_OBJECT);
    }
    let store = store(scheme, url).map_err(|e| fail(one_line(&e)))?;
    let got = store.get(&path).await.map_err(|e| fail(one_line(&e)))?;
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| fail(format!("creating {}: {e}", dest.display())))?;
    let mut body = got.into_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| fail(one_line(&e)))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| fail(format!("writing {}: {e}", dest.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| fail(format!("writing {}: {e}", dest.display())))?;
    Ok(())
}

fn store(scheme: ObjectStoreScheme, url: &str) -> object_store::Result<Box<dyn ObjectStore>> {
    use object_store::{aws, azure, gcp};
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Ok(match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut b = aws::AmazonS3Builder::from_env().with_url(url);
            if let Some(endpoint) = env("S3_ENDPOINT") {
                b = b
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint);
            }
            if env("S3_FORCE_PATH_STYLE").is_some_and(|v| v == "true") {
                b = b.with_virtual_hosted_style_request(false);
            }
            Box::new(b.build()?)
        }
        ObjectStoreScheme::GoogleCloudStorage => Box::new(
            gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()?,
        ),
        ObjectStoreScheme::MicrosoftAzure => Box::new(
            azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .build()?,
        ),
        _ => {
            return Err(object_store::Error::NotSupported {
                source: format!("{url} is not a bucket URL").into(),
            })
        }
    })
}

fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    crate::log::one_line(e)
}
