//! Attachments: multipart upload (field `files`, one or more files), metadata, streamed
//! download with HTTP range requests, deletion. Only members of the room where a file was
//! posted can see or fetch it, whatever id they guess.

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::TryStreamExt;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::{idempotency_key, ok_json, AppState, State};
use crate::actors::room::{may_change_files, AttachFiles, DeleteAttachment, Uploads};
use crate::storage::attachments::thumbnail_candidate;
use crate::storage::seal::ContentOpener;
use crate::storage::{AttachmentRecord, IdempotentResult, PreparedUpload};

fn not_found(id: u64) -> ApiError {
    ApiError::NotFound(format!("Attachment {id} not found"))
}

/// The attachment, if it exists and the caller is a member of its room (404 otherwise, so
/// guessing ids tells a stranger nothing).
fn visible_attachment(
    state: &AppState,
    auth: &Authed,
    id: u64,
) -> Result<AttachmentRecord, ApiError> {
    let record = state.store.attachment(id)?.ok_or_else(|| not_found(id))?;
    if state.store.member(record.room_id, auth.id())?.is_none() {
        return Err(not_found(id));
    }
    Ok(record)
}

fn clean_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    (!cleaned.is_empty() && cleaned != "." && cleaned != ".." && cleaned.len() <= 255)
        .then_some(cleaned)
}

/// Upload chunks queued for the blocking writer (each up to actix's read size, ~64 KiB).
const UPLOAD_QUEUE: usize = 16;

/// `POST /api/v1/messages/{messageId}/attachments`: the files stream to disk here; the
/// room's actor then attaches them all, or none if the message was deleted meanwhile. With
/// an `Idempotency-Key` used before by the caller, answers that request's attachments.
pub async fn upload(
    state: State,
    auth: Authed,
    req: HttpRequest,
    path: web::Path<u64>,
    form: Multipart,
) -> Result<HttpResponse, ApiError> {
    let message_id = path.into_inner();
    let idempotency = idempotency_key(&req, auth.id())?;
    let message = super::messages::visible_message(&state, &auth, message_id)?;
    if let Some(key) = &idempotency {
        if let Some(IdempotentResult::Attachments { attachment_ids, .. }) =
            state.store.idempotent_result(key)?
        {
            let mut attachments = Vec::new();
            for id in attachment_ids {
                if let Some(a) = state.store.attachment(id)? {
                    attachments.push(a.to_api());
                }
            }
            return Ok(ok_json(json!({ "attachments": attachments })));
        }
    }
    may_change_files(&state.store, auth.id(), auth.user.is_admin, &message, true)?;
    let files = receive_files(&state, &auth, form).await?;
    let hashes: Vec<String> = files.iter().map(|f| f.content_hash.clone()).collect();
    let attached = state
        .in_room(
            message.room_id,
            AttachFiles {
                user_id: auth.id(),
                is_admin: auth.user.is_admin,
                message_id,
                files: Uploads::new(files),
                quota: state.limits.user_quota_bytes,
                idempotency,
            },
        )
        .await;
    // Content that ended up attached nowhere (refused, or a replay) goes again.
    let store = state.store.clone();
    let _ = web::block(move || store.erase_unreferenced(&hashes)).await;
    let stored: Vec<AttachmentRecord> = attached?;
    let attachments: Vec<_> = stored.iter().map(|a| a.to_api()).collect();
    Ok(ok_json(json!({ "attachments": attachments })))
}

/// Streams the multipart body's files to disk (checksums, size limit, quota), placing each
/// under its hash with its thumbnail. All or nothing: on an error, nothing is kept.
async fn receive_files(
    state: &AppState,
    auth: &Authed,
    mut form: Multipart,
) -> Result<Vec<PreparedUpload>, ApiError> {
    let max = state.limits.max_file_bytes;
    let quota = state.limits.user_quota_bytes;
    // Space left for this user; files of this request count as they arrive.
    let mut quota_left = if quota == 0 {
        u64::MAX
    } else {
        quota.saturating_sub(state.store.quota_used(auth.id())?)
    };
    let mut files: Vec<PreparedUpload> = Vec::new();
    let mut expected_checksum: Option<String> = None;
    let bad = |e: actix_multipart::MultipartError| {
        ApiError::BadRequest(format!("Malformed multipart body: {e}"))
    };
    let result: Result<(), ApiError> = async {
        while let Some(mut field) = form.try_next().await.map_err(bad)? {
            let name = field.name().unwrap_or("").to_string();
            if name == "fileChecksum" {
                // Optional: the SHA-1 the client computed for the next file.
                let mut text = Vec::new();
                while let Some(part) = field.try_next().await.map_err(bad)? {
                    text.extend_from_slice(&part);
                    if text.len() > 128 {
                        return Err(ApiError::BadRequest("fileChecksum is too long".into()));
                    }
                }
                expected_checksum = Some(String::from_utf8_lossy(&text).trim().to_ascii_lowercase());
                continue;
            }
            if name != "files" {
                return Err(ApiError::BadRequest(format!(
                    "Unexpected form field '{name}'; files go in the field 'files'"
                )));
            }
            let file_name = field
                .content_disposition()
                .and_then(|cd| cd.get_filename())
                .and_then(clean_file_name)
                .ok_or_else(|| ApiError::BadRequest("Each file needs a file name".into()))?;
            let content_type = mime_guess::from_path(&file_name)
                .first_or_octet_stream()
                .to_string();
            let writer = state.store.begin_upload()?;
            // The file is written and hashed on a blocking thread, fed through a short
            // queue: a slow disk (or the kernel throttling dirty pages) never stalls the
            // async worker that serves other requests.
            let (feed, mut parts) = tokio::sync::mpsc::channel::<bytes::Bytes>(UPLOAD_QUEUE);
            let writer_store = state.store.clone();
            let writing = actix_rt::task::spawn_blocking(move || {
                let mut writer = writer;
                while let Some(part) = parts.blocking_recv() {
                    if let Err(e) = writer.write(&writer_store, &part) {
                        writer.abort();
                        return Err(e);
                    }
                }
                Ok(writer)
            });
            let mut size = 0u64;
            let copied: Result<(), ApiError> = async {
                while let Some(part) = field.try_next().await.map_err(bad)? {
                    if size + part.len() as u64 > max {
                        return Err(ApiError::PayloadTooLarge(format!(
                            "'{file_name}' is larger than the limit of {max} bytes"
                        )));
                    }
                    if size + part.len() as u64 > quota_left {
                        return Err(ApiError::PayloadTooLarge(format!(
                            "'{file_name}' does not fit in your attachment quota of {quota} bytes; delete files or ask an administrator"
                        )));
                    }
                    size += part.len() as u64;
                    if feed.send(part).await.is_err() {
                        break; // the writer failed: its error is below
                    }
                }
                Ok(())
            }
            .await;
            drop(feed);
            let written = writing
                .await
                .map_err(|e| ApiError::Internal(format!("upload writer: {e}")))?;
            let writer = match (copied, written) {
                (Ok(()), Ok(writer)) => writer,
                (Err(e), Ok(writer)) => {
                    writer.abort();
                    return Err(e);
                }
                (_, Err(e)) => return Err(e.into()),
            };
            quota_left = quota_left.saturating_sub(writer.size);
            let store = state.store.clone();
            let thumbnail = thumbnail_candidate(&content_type, writer.size);
            // Thumbnails decode images: one at a time (each may take tens of MiB).
            let _slot = if thumbnail {
                Some(state.thumbnail_slots.acquire().await)
            } else {
                None
            };
            let (name, kind) = (file_name.clone(), content_type.clone());
            let prepared = web::block(move || writer.finish(&store, &name, &kind))
                .await
                .map_err(|e| ApiError::Internal(format!("upload worker: {e}")))??;
            if let Some(want) = expected_checksum.take() {
                if want != prepared.checksum {
                    return Err(ApiError::BadRequest(format!(
                        "ChecksumVerificationOnServerSideMismatch: '{file_name}' has SHA-1 {}, the client said {want}",
                        prepared.checksum
                    )));
                }
            }
            files.push(prepared);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let hashes: Vec<String> = files.iter().map(|f| f.content_hash.clone()).collect();
        drop(files);
        let store = state.store.clone();
        let _ = web::block(move || store.erase_unreferenced(&hashes)).await;
        return Err(e);
    }
    if files.is_empty() {
        return Err(ApiError::BadRequest(
            "No files: send them as multipart/form-data in the field 'files'".into(),
        ));
    }
    Ok(files)
}

/// `GET /api/v1/attachments/{attachmentId}`: the documented metadata object.
pub async fn metadata(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let record = visible_attachment(&state, &auth, path.into_inner())?;
    let mut body = serde_json::to_value(record.to_api()).unwrap_or_default();
    body["httpStatusCode"] = json!(200);
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/v1/thumbnails/{attachmentId}` (extension): the attachment's JPEG thumbnail
/// (at most 256×256) when `hasThumbnail` is true; 404 otherwise.
pub async fn thumbnail(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let record = visible_attachment(&state, &auth, path.into_inner())?;
    let missing = || {
        ApiError::NotFound(format!(
            "Attachment {} has no thumbnail",
            record.attachment_id
        ))
    };
    if !record.has_thumbnail {
        return Err(missing());
    }
    let path = state.store.thumbnail_path(&record.content_hash);
    if let Some(opened) = state.store.sealed_content(&path) {
        let jpeg = web::block(move || opened.and_then(|mut c| c.read_all(8 << 20)))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|_| missing())?;
        return Ok(HttpResponse::Ok()
            .content_type(mime_guess::mime::IMAGE_JPEG)
            .body(jpeg));
    }
    let file = actix_files::NamedFile::open(path).map_err(|_| missing())?;
    Ok(file
        .set_content_type(mime_guess::mime::IMAGE_JPEG)
        .use_last_modified(false)
        .into_response(&req))
}

/// A single byte range from a `Range` header; `Err` when it cannot be satisfied.
fn parse_range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: answer with the whole file
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.trim().parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.trim().parse().ok()?;
        let end = if b.trim().is_empty() {
            size.saturating_sub(1)
        } else {
            b.trim().parse::<u64>().ok()?.min(size.saturating_sub(1))
        };
        (start, end)
    };
    if size == 0 || start >= size || end < start {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

/// `GET /api/v1/attachments/{attachmentId}/{fileName}`: the content, streamed from its
/// file, with `Content-Type`, `Content-Disposition`, `Content-Length` and range support.
pub async fn download(
    state: State,
    auth: Authed,
    req: HttpRequest,
    path: web::Path<(u64, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, _name) = path.into_inner();
    let record = visible_attachment(&state, &auth, id)?;
    let size = record.file_size;
    let unsatisfiable = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, size))
        .is_some_and(|r| r.is_err());
    if unsatisfiable {
        return Ok(HttpResponse::RangeNotSatisfiable()
            .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
            .json(json!({ "errorText": format!("Range not satisfiable for {size} bytes"), "httpStatusCode": 416 })));
    }
    let file_path = state.store.content_path(&record.content_hash);
    let missing = |e: std::io::Error| {
        tracing::error!("attachment {id}: content file {}: {e}", file_path.display());
        ApiError::Internal("The attachment's content is missing on the server".into())
    };
    let sealed = match state.store.sealed_content(&file_path) {
        Some(opened) => Some(opened.map_err(missing)?),
        None => None,
    };
    let content_type: mime_guess::Mime = record
        .content_type
        .parse()
        .unwrap_or(mime_guess::mime::APPLICATION_OCTET_STREAM);
    let disposition = header::ContentDisposition {
        disposition: header::DispositionType::Attachment,
        parameters: vec![header::DispositionParam::FilenameExt(
            header::ExtendedValue {
                charset: header::Charset::Ext("UTF-8".into()),
                language_tag: None,
                value: record.file_name.clone().into_bytes(),
            },
        )],
    };
    if let Some(opener) = sealed {
        return Ok(sealed_download(&req, opener, content_type, disposition));
    }
    let file = actix_files::NamedFile::open_async(&file_path)
        .await
        .map_err(missing)?;
    Ok(file
        .set_content_type(content_type)
        .set_content_disposition(disposition)
        .use_last_modified(false)
        .into_response(&req))
}

/// Plain bytes of sealed content opened per trip to the blocking pool.
const SEALED_BATCH: u64 = 512 * 1024;

/// Content of an encrypted folder: opened a few 64 KiB chunks at a time on the blocking
/// pool and streamed, with the same range support as a clear file.
fn sealed_download(
    req: &HttpRequest,
    opener: ContentOpener,
    content_type: mime_guess::Mime,
    disposition: header::ContentDisposition,
) -> HttpResponse {
    let size = opener.len;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, size))
        .and_then(Result::ok);
    let (start, end) = range.map_or((0, size), |(a, b)| (a, b + 1));
    let mut response = match range {
        Some(_) => {
            let mut r = HttpResponse::PartialContent();
            r.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            ));
            r
        }
        None => HttpResponse::Ok(),
    };
    let chunks =
        futures_util::stream::unfold((Some(opener), start), move |(opener, at)| async move {
            let mut opener = opener?;
            if at >= end {
                return None;
            }
            let read = web::block(move || {
                // Several chunks per trip to the blocking pool: a trip costs about as
                // much as opening one chunk.
                let mut out = bytes::BytesMut::with_capacity((end - at).min(SEALED_BATCH) as usize);
                let r = opener.read_range(at, end, |b| {
                    out.extend_from_slice(b);
                    (out.len() as u64) < SEALED_BATCH
                });
                (opener, r.map(|_| out.freeze()))
            })
            .await;
            match read {
                Ok((opener, Ok(b))) if !b.is_empty() => {
                    let next = at + b.len() as u64;
                    Some((Ok(b), (Some(opener), next)))
                }
                Ok((_, Ok(_))) => None,
                Ok((_, Err(e))) => {
                    tracing::error!("reading sealed attachment content: {e}");
                    Some((Err(e), (None, at)))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), (None, at))),
            }
        });
    response
        .content_type(content_type)
        .insert_header(disposition)
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .no_chunking(end - start)
        .streaming(chunks)
}

/// `DELETE /api/v1/attachments/{attachmentId}`: frees the space when it was the last use.
pub async fn delete(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let record = visible_attachment(&state, &auth, path.into_inner())?;
    state
        .in_room(
            record.room_id,
            DeleteAttachment {
                user_id: auth.id(),
                is_admin: auth.user.is_admin,
                attachment_id: record.attachment_id,
            },
        )
        .await?;
    Ok(ok_json(json!({})))
}
