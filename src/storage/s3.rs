//! S3 (and S3-compatible) storage through aws-sdk-s3: `s3://bucket/key` locations, an endpoint
//! override and path-style access for S3-compatible servers, static keys or the default AWS
//! credential chain (environment, profile, web identity, instance metadata).

use std::collections::BTreeMap;
use std::io::ErrorKind;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use utoipa::ToSchema;

use super::{LIST_PAGE, ListPages, Location, LocationError, Storage, StorageError};

/// Files larger than this are uploaded in parts of this size (S3 allows 5 MiB to 5 GiB per part).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// How to reach one S3 bucket: for a warehouse in the settings, or a peer's destination warehouse.
/// The secret key is a [`crate::secret::Secret`]: `Debug` shows the key id, never the secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// An S3-compatible server's URL; AWS's own endpoints when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `http://endpoint/bucket/key` rather than `http://bucket.endpoint/key`.
    #[serde(default, alias = "path-style")]
    pub path_style: bool,
    /// Static keys; without them the default AWS credential chain is used.
    #[serde(
        default,
        alias = "access-key-id",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_key_id: Option<String>,
    /// Never logged, never returned by the management API.
    #[serde(
        default,
        alias = "secret-access-key",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub secret_access_key: Option<crate::secret::Secret>,
}

impl S3Settings {
    /// The same settings without the secret, for answers and logs.
    pub fn without_secret(&self) -> Self {
        Self {
            secret_access_key: None,
            ..self.clone()
        }
    }
}

/// One S3 client (its endpoint and credentials), serving the `s3://` locations under one root.
#[derive(Clone)]
pub struct S3Storage {
    client: Client,
    /// Whose storage this is, for error messages.
    owner: String,
    root: Location,
}

/// The bucket and key of a location this storage serves (checked against its root first).
fn bucket_and_key<'a>(
    storage: &S3Storage,
    location: &'a Location,
) -> Result<(&'a str, String), StorageError> {
    storage.check(location)?;
    location
        .s3_bucket_and_key()
        .ok_or_else(|| StorageError::OutsideRoot {
            location: location.to_string(),
            root: storage.root.to_string(),
        })
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage").finish_non_exhaustive()
    }
}

impl S3Storage {
    pub async fn new(settings: &S3Settings, root: Location) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let (Some(key), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                key,
                secret.expose(),
                None,
                None,
                "floe",
            ));
        }
        let shared = loader.load().await;
        let mut config =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.path_style);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        if settings.region.is_none() && shared.region().is_none() {
            // S3-compatible servers ignore the region, but signing needs one.
            config = config.region(Region::new("us-east-1"));
        }
        Self {
            client: Client::from_conf(config.build()),
            owner: "this S3 storage".to_string(),
            root,
        }
    }

    /// Names whose storage this is in its errors (e.g. "warehouse `lake`").
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.owner = owner.to_string();
        self
    }

    fn err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        location: &Location,
        err: SdkError<E, HttpResponse>,
    ) -> StorageError {
        s3_err(&self.owner, &location.to_string(), err)
    }

    /// An object, its body streaming in.
    async fn get(&self, location: &Location) -> Result<GetObjectOutput, StorageError> {
        let (bucket, key) = bucket_and_key(self, location)?;
        self.client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(location, e))
    }
}

/// Maps an SDK error to a storage error that names the location and says what S3 answered.
fn s3_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
    owner: &str,
    location: &str,
    err: SdkError<E, HttpResponse>,
) -> StorageError {
    let code = err.as_service_error().and_then(|e| e.code()).unwrap_or("");
    let status = err.raw_response().map(|r| r.status().as_u16());
    classify(
        owner,
        location,
        code,
        status,
        DisplayErrorContext(&err).to_string(),
    )
}

/// The storage error for what S3 answered about `location`: its error code and, for a whole
/// request, the HTTP status.
fn classify(
    owner: &str,
    location: &str,
    code: &str,
    status: Option<u16>,
    message: String,
) -> StorageError {
    if matches!(code, "NoSuchKey" | "NotFound" | "NoSuchBucket") || status == Some(404) {
        return StorageError::NotFound(location.to_string());
    }
    if matches!(
        code,
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "Forbidden"
    ) || status == Some(403)
    {
        return StorageError::Denied {
            owner: owner.to_string(),
            location: location.to_string(),
            message,
        };
    }
    StorageError::Io {
        location: location.to_string(),
        source: std::io::Error::other(message),
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn root(&self) -> &Location {
        &self.root
    }

    async fn write_new(&self, location: &Location, bytes: &[u8]) -> Result<(), StorageError> {
        // Metadata files have unique names; the check keeps the "never overwrite" promise on
        // servers without conditional writes.
        if self.size(location).await?.is_some() {
            return Err(StorageError::AlreadyExists(location.to_string()));
        }
        let (bucket, key) = bucket_and_key(self, location)?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| self.err(location, e))?;
        Ok(())
    }

    async fn read(&self, location: &Location, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        let io = |source| StorageError::Io {
            location: location.to_string(),
            source,
        };
        let too_large = || StorageError::TooLarge {
            location: location.to_string(),
            limit: max_bytes,
        };
        let object = self.get(location).await?;
        if object
            .content_length()
            .is_some_and(|len| len.max(0) as u64 > max_bytes)
        {
            return Err(too_large());
        }
        // The length is the server's word; the read is bounded whatever it said.
        let mut bytes = Vec::new();
        object
            .body
            .into_async_read()
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(io)?;
        if bytes.len() as u64 > max_bytes {
            return Err(too_large());
        }
        Ok(bytes)
    }

    async fn size(&self, location: &Location) -> Result<Option<u64>, StorageError> {
        let (bucket, key) = bucket_and_key(self, location)?;
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(err) => match self.err(location, err) {
                StorageError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn open(
        &self,
        location: &Location,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError> {
        Ok(Box::new(self.get(location).await?.body.into_async_read()))
    }

    async fn write_stream(
        &self,
        location: &Location,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        _durable: bool,
    ) -> Result<u64, StorageError> {
        let (bucket, key) = bucket_and_key(self, location)?;
        let key = key.as_str();
        let io = |e: std::io::Error| StorageError::Io {
            location: location.to_string(),
            source: e,
        };
        let first = read_part(reader).await.map_err(io)?;
        if first.len() < PART_BYTES {
            // One request; S3 makes an object visible only whole, and durably.
            let written = first.len() as u64;
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(first))
                .send()
                .await
                .map_err(|e| self.err(location, e))?;
            return Ok(written);
        }
        let mut written = 0u64;
        self.multipart(location, async |upload_id| {
            let mut parts = Vec::new();
            let mut part = first;
            while !part.is_empty() {
                let number = parts.len() as i32 + 1;
                written += part.len() as u64;
                let uploaded = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(part))
                    .send()
                    .await
                    .map_err(|e| self.err(location, e))?;
                parts.push(completed(number, uploaded.e_tag()));
                part = read_part(reader).await.map_err(io)?;
            }
            Ok(parts)
        })
        .await?;
        Ok(written)
    }

    async fn sync_all(&self) -> Result<(), StorageError> {
        // An S3 PUT is durable when it is acknowledged.
        Ok(())
    }

    async fn delete(&self, location: &Location) -> Result<(), StorageError> {
        let (bucket, key) = bucket_and_key(self, location)?;
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match self.err(location, err) {
                StorageError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn delete_many(&self, locations: &[Location]) -> Result<(), StorageError> {
        let mut by_bucket: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for location in locations {
            let (bucket, key) = bucket_and_key(self, location)?;
            by_bucket.entry(bucket).or_default().push(key);
        }
        for (bucket, keys) in by_bucket {
            for batch in keys.chunks(DELETE_BATCH) {
                self.delete_batch(bucket, batch).await?;
            }
        }
        Ok(())
    }

    fn list_pages(&self, prefix: &Location) -> ListPages {
        let key_prefix = match bucket_and_key(self, prefix) {
            // The directory's keys, not its siblings': `t-1/` must not match `t-10/...`.
            Ok((bucket, key)) if key.is_empty() => (bucket.to_string(), String::new()),
            Ok((bucket, key)) => (bucket.to_string(), format!("{key}/")),
            Err(err) => return futures::stream::once(async { Err(err) }).boxed(),
        };
        let (bucket, key_prefix) = key_prefix;
        let pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&key_prefix)
            .max_keys(LIST_PAGE as i32)
            .into_paginator()
            .send();
        let (this, prefix) = (self.clone(), prefix.clone());
        // Each page is fetched when the one before has been consumed; the first error ends it.
        futures::stream::unfold(Some(pages), move |pages| {
            let (this, prefix, key_prefix) = (this.clone(), prefix.clone(), key_prefix.clone());
            async move {
                let mut pages = pages?;
                let page = match pages.next().await? {
                    Ok(page) => page,
                    Err(err) => return Some((Err(this.err(&prefix, err)), None)),
                };
                let mut found = Vec::with_capacity(page.contents().len());
                for key in page.contents().iter().filter_map(|object| object.key()) {
                    let relative: Vec<&str> = key[key_prefix.len()..].split('/').collect();
                    match prefix.join_all(&relative) {
                        Ok(location) => found.push(location),
                        Err(err) => tracing::warn!(%err, key, "an object whose key is not a valid \
                            location is left alone"),
                    }
                }
                Some((Ok(found), Some(pages)))
            }
        })
        .boxed()
    }

    async fn remove_empty_dirs(&self, _prefix: &Location) -> Result<(), StorageError> {
        // Object stores have no directories.
        Ok(())
    }

    fn as_s3(&self) -> Option<&S3Storage> {
        Some(self)
    }
}

/// The most keys one DeleteObjects request may name.
const DELETE_BATCH: usize = 1000;

impl S3Storage {
    /// One DeleteObjects request; S3 reports each key's failure in the answer, not as an error.
    async fn delete_batch(&self, bucket: &str, keys: &[String]) -> Result<(), StorageError> {
        let location = |key: &str| format!("s3://{bucket}/{key}");
        // The request as a whole is named by its first key.
        let first = location(&keys[0]);
        let unbuildable = |e: aws_sdk_s3::error::BuildError| StorageError::Io {
            location: first.clone(),
            source: std::io::Error::other(e),
        };
        let objects = keys
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(unbuildable)?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(unbuildable)?;
        let answer = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| s3_err(&self.owner, &first, e))?;
        // A key already gone is what a delete wants.
        match answer
            .errors()
            .iter()
            .find(|e| e.code() != Some("NoSuchKey"))
        {
            None => Ok(()),
            Some(failed) => {
                let code = failed.code().unwrap_or_default();
                let message = format!("{code}: {}", failed.message().unwrap_or_default());
                let key = failed.key().unwrap_or_default();
                Err(classify(&self.owner, &location(key), code, None, message))
            }
        }
    }
}

/// The largest object one CopyObject request may copy; larger ones are copied in parts.
pub const COPY_OBJECT_MAX_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// The part size of a multipart copy (S3 allows 5 MiB to 5 GiB).
pub const COPY_PART_BYTES: u64 = 1024 * 1024 * 1024;

impl S3Storage {
    /// Copies an object on the S3 side: no byte passes through floe. One CopyObject up to 5 GiB,
    /// UploadPartCopy in `part_bytes` ranges above. This client's credentials must be able to
    /// read the source; [`StorageError::Denied`] says they cannot.
    pub async fn copy_object(
        &self,
        from: &Location,
        to: &Location,
        size: u64,
        part_bytes: u64,
    ) -> Result<(), StorageError> {
        let (bucket, key) = bucket_and_key(self, to)?;
        let key = key.as_str();
        let source = copy_source(from)?;
        if size <= COPY_OBJECT_MAX_BYTES && size <= part_bytes {
            self.client
                .copy_object()
                .copy_source(source)
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| self.err(to, e))?;
            return Ok(());
        }
        self.multipart(to, async |upload_id| {
            let mut parts = Vec::new();
            let mut start = 0u64;
            while start < size {
                let end = (start + part_bytes).min(size) - 1;
                let number = parts.len() as i32 + 1;
                let copied = self
                    .client
                    .upload_part_copy()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| self.err(to, e))?;
                let e_tag = copied.copy_part_result().and_then(|r| r.e_tag());
                parts.push(completed(number, e_tag));
                start = end + 1;
            }
            Ok(parts)
        })
        .await
    }

    /// One multipart upload to `location`: `upload_parts` sends the parts (uploaded or copied) and
    /// returns them; then the upload is completed, or aborted if anything failed, so no
    /// half-written object and no orphaned parts stay behind.
    async fn multipart(
        &self,
        location: &Location,
        upload_parts: impl AsyncFnOnce(&str) -> Result<Vec<CompletedPart>, StorageError>,
    ) -> Result<(), StorageError> {
        let (bucket, key) = bucket_and_key(self, location)?;
        let key = key.as_str();
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(location, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let parts = upload_parts(&upload_id).await?;
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.err(location, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

fn completed(number: i32, e_tag: Option<&str>) -> CompletedPart {
    CompletedPart::builder()
        .set_e_tag(e_tag.map(str::to_string))
        .part_number(number)
        .build()
}

/// A copy source: `bucket/key`, URL-encoded except for the key's slashes. The source is another
/// storage's location (the copier checked it against that storage's root).
fn copy_source(location: &Location) -> Result<String, StorageError> {
    let (bucket, _) = location.s3_bucket_and_key().ok_or_else(|| {
        StorageError::InvalidLocation(LocationError::UnsupportedScheme(location.to_string()))
    })?;
    let encoded: Vec<String> = location
        .segments()
        .iter()
        .map(|segment| {
            percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        })
        .collect();
    Ok(format!("{bucket}/{}", encoded.join("/")))
}

/// Reads up to one part from a stream (less only at its end).
async fn read_part(reader: &mut (dyn AsyncRead + Send + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PART_BYTES);
    let mut limited = (&mut *reader).take(PART_BYTES as u64);
    loop {
        match limited.read_buf(&mut part).await {
            Ok(0) => return Ok(part),
            Ok(_) if part.len() >= PART_BYTES => return Ok(part),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
