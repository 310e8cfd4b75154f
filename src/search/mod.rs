//! Full-text search over history (tantivy). One document per message or comment: its text
//! and its attachments' file names, with the room, author, time, type and whether it has
//! files as filters. The index lives in `<storage>/search/` (in memory only when the folder
//! is encrypted at rest, so no word of an encrypted record reaches the disk in clear) and
//! is a derived copy: the [`indexer`] keeps it up to date from the change log, and it can
//! always be rebuilt from the records.
//!
//! Who may see a hit is decided at query time, from the asker's current rooms: a member
//! removed from a room finds nothing of it, and finds all of it again when re-added.

pub mod indexer;
mod query;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{Index, IndexReader, Order, ReloadPolicy, TantivyDocument, Term};

use crate::model::{MessageId, MessageType, RoomId, UserId};
use crate::storage::MessageRecord;

/// The index's folder inside the storage folder.
pub const DIR: &str = "search";
/// Bumped when the schema or the analysis changes: an index of another version is rebuilt.
const FORMAT: u32 = 1;
/// The analyzer of `text` and `files`: words, lower case, accents folded, English stems.
const STEMMED: &str = "confab_stemmed";
/// The analyzer of `words` (prefix queries): the same without stemming.
const FOLDED: &str = "confab_folded";
/// Results per page at most, and how deep `offset` may go.
pub const MAX_LIMIT: usize = 100;
pub const MAX_OFFSET: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Open(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

pub type Result<T> = std::result::Result<T, SearchError>;

#[derive(Clone, Copy)]
struct Fields {
    message_id: Field,
    parent_id: Field,
    room_id: Field,
    author_id: Field,
    created: Field,
    kind: Field,
    has_files: Field,
    /// A hash of everything indexed: a change that touches none of it (a read receipt, a
    /// reaction) is not indexed again.
    fingerprint: Field,
    text: Field,
    files: Field,
    words: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let analyzed = |name: &str, positions: bool, stored: bool| {
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(name)
            .set_index_option(if positions {
                IndexRecordOption::WithFreqsAndPositions
            } else {
                IndexRecordOption::WithFreqs
            });
        let options = TextOptions::default().set_indexing_options(indexing);
        if stored {
            options.set_stored()
        } else {
            options
        }
    };
    let fields = Fields {
        message_id: b.add_u64_field("message_id", INDEXED | STORED),
        parent_id: b.add_u64_field("parent_id", STORED),
        room_id: b.add_u64_field("room_id", INDEXED | STORED),
        author_id: b.add_u64_field("author_id", INDEXED | STORED),
        created: b.add_u64_field("created", INDEXED | STORED | FAST),
        kind: b.add_u64_field("kind", INDEXED),
        has_files: b.add_u64_field("has_files", INDEXED),
        fingerprint: b.add_u64_field("fingerprint", STORED),
        text: b.add_text_field("text", analyzed(STEMMED, true, true)),
        files: b.add_text_field("files", analyzed(STEMMED, true, true)),
        words: b.add_text_field("words", analyzed(FOLDED, false, false)),
    };
    (b.build(), fields)
}

fn register_analyzers(index: &Index) {
    let folded = || {
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(48))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
    };
    index.tokenizers().register(
        STEMMED,
        folded().filter(Stemmer::new(Language::English)).build(),
    );
    index.tokenizers().register(FOLDED, folded().build());
}

fn kind_code(t: MessageType) -> u64 {
    match t {
        MessageType::Regular => 0,
        MessageType::Issue => 1,
        MessageType::Meeting => 2,
    }
}

/// What the index holds of one message.
pub struct IndexedMessage {
    pub record: MessageRecord,
    pub file_names: Vec<String>,
}

impl IndexedMessage {
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let r = &self.record;
        (r.room_id, r.user_id, r.parent_message_id, r.created_utc).hash(&mut h);
        (kind_code(r.message_type), &r.text, &self.file_names).hash(&mut h);
        h.finish()
    }
}

/// Where the index lives.
#[derive(Debug, Clone)]
pub enum Location {
    Dir(PathBuf),
    /// Encrypted folders: in memory, rebuilt at every start.
    Memory,
}

impl Location {
    pub fn for_folder(storage_dir: &Path, encrypted: bool) -> Location {
        if encrypted {
            Location::Memory
        } else {
            Location::Dir(storage_dir.join(DIR))
        }
    }
}

/// What a commit records: the last change-log entry the index has taken in.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    format: u32,
    cursor: u64,
}

/// The open index, shared by the indexer (which writes) and the API (which searches).
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// The writer, taken by the indexer (and by `admin reindex`).
    writer: Mutex<tantivy::IndexWriter<TantivyDocument>>,
    /// The change-log entry the committed index is current through.
    cursor: AtomicU64,
    /// False while a rebuild runs: answers may miss older messages.
    complete: AtomicBool,
    pub location: Location,
}

/// Writer memory: tantivy's minimum per thread is 15 MB; one thread keeps the indexer
/// from competing with chat for the cores.
const WRITER_BYTES: usize = 32 * 1024 * 1024;

impl SearchIndex {
    /// Opens the index at `location`; a missing, damaged or outdated one is created empty
    /// (answered with `needs_rebuild`: the caller rebuilds it from the records).
    pub fn open(location: Location) -> Result<(Arc<SearchIndex>, bool)> {
        let (schema, fields) = schema();
        let (index, cursor) = match &location {
            Location::Memory => (Index::create_in_ram(schema), None),
            Location::Dir(dir) => match open_existing(dir, &schema) {
                Ok(found) => found,
                Err(e) => {
                    if dir.exists() {
                        tracing::warn!(
                            "the search index in {} cannot be used ({e}): it is rebuilt from history",
                            dir.display()
                        );
                        std::fs::remove_dir_all(dir)?;
                    }
                    std::fs::create_dir_all(dir)?;
                    (Index::create_in_dir(dir, schema)?, None)
                }
            },
        };
        register_analyzers(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let writer = index.writer_with_num_threads(1, WRITER_BYTES)?;
        let needs_rebuild = cursor.is_none();
        let this = SearchIndex {
            index,
            reader,
            fields,
            writer: Mutex::new(writer),
            cursor: AtomicU64::new(cursor.unwrap_or(0)),
            complete: AtomicBool::new(!needs_rebuild),
            location,
        };
        Ok((Arc::new(this), needs_rebuild))
    }

    /// The change-log entry the committed index is current through.
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::SeqCst)
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::SeqCst)
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, tantivy::IndexWriter<TantivyDocument>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Empties the index (uncommitted) for a rebuild.
    pub fn clear(&self) -> Result<()> {
        self.complete.store(false, Ordering::SeqCst);
        self.writer().delete_all_documents()?;
        Ok(())
    }

    /// The fingerprint the committed index holds for a message, if any.
    fn indexed_fingerprint(&self, searcher: &tantivy::Searcher, id: MessageId) -> Option<u64> {
        let term = Term::from_field_u64(self.fields.message_id, id);
        let query = TermQuery::new(term, IndexRecordOption::Basic);
        let hits = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .ok()?;
        let (_, addr) = hits.first()?;
        let doc: TantivyDocument = searcher.doc(*addr).ok()?;
        doc.get_first(self.fields.fingerprint)?.as_u64()
    }

    /// Applies a batch: each message indexed (replacing what was there, unless it is
    /// unchanged) or, when `None`, removed. Answers how many documents changed.
    pub fn apply(&self, batch: &[(MessageId, Option<IndexedMessage>)]) -> Result<usize> {
        let searcher = self.reader.searcher();
        let writer = self.writer();
        let f = self.fields;
        let mut changed = 0;
        for (id, message) in batch {
            let term = Term::from_field_u64(f.message_id, *id);
            match message {
                None => {
                    writer.delete_term(term);
                    changed += 1;
                }
                Some(m) => {
                    let fingerprint = m.fingerprint();
                    if self.indexed_fingerprint(&searcher, *id) == Some(fingerprint) {
                        continue;
                    }
                    writer.delete_term(term);
                    writer.add_document(self.document(m, fingerprint))?;
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    /// Adds messages known not to be in the index (a rebuild).
    pub fn add_fresh(&self, messages: &[IndexedMessage]) -> Result<()> {
        let writer = self.writer();
        for m in messages {
            writer.add_document(self.document(m, m.fingerprint()))?;
        }
        Ok(())
    }

    fn document(&self, m: &IndexedMessage, fingerprint: u64) -> TantivyDocument {
        let f = self.fields;
        let r = &m.record;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.message_id, r.message_id);
        doc.add_u64(f.parent_id, r.parent_message_id);
        doc.add_u64(f.room_id, r.room_id);
        doc.add_u64(f.author_id, r.user_id);
        doc.add_u64(f.created, r.created_utc);
        doc.add_u64(f.kind, kind_code(r.message_type));
        doc.add_u64(f.has_files, u64::from(!m.file_names.is_empty()));
        doc.add_u64(f.fingerprint, fingerprint);
        doc.add_text(f.text, &r.text);
        doc.add_text(f.words, &r.text);
        for name in &m.file_names {
            doc.add_text(f.files, name);
            doc.add_text(f.words, name);
        }
        doc
    }

    /// Makes everything applied so far durable (the index's own fsync) and visible,
    /// recording `cursor`; `complete` ends a rebuild.
    pub fn commit(&self, cursor: u64, complete: bool) -> Result<()> {
        let payload = serde_json::to_string(&Payload {
            format: FORMAT,
            cursor,
        })
        .unwrap_or_default();
        {
            let mut writer = self.writer();
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
        }
        self.reader.reload()?;
        self.cursor.store(cursor, Ordering::SeqCst);
        if complete {
            self.complete.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Makes a rebuild's progress visible without recording a cursor: an index left like
    /// this by a crash is "never completed" and is rebuilt.
    pub fn commit_partial(&self) -> Result<()> {
        {
            let mut writer = self.writer();
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload("");
            prepared.commit()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Documents in the committed index.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Runs a query for someone who belongs to `rooms`.
    pub fn search(&self, request: &SearchRequest, rooms: &[RoomId]) -> Result<SearchAnswer> {
        let f = self.fields;
        let searcher = self.reader.searcher();
        let text_query = query::parse(&self.index, f, &request.q)?;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let scored = text_query.is_some();
        if let Some(q) = text_query.as_ref() {
            clauses.push((Occur::Must, q.box_clone()));
        }
        clauses.push((
            Occur::Must,
            Box::new(TermSetQuery::new(
                rooms.iter().map(|&r| Term::from_field_u64(f.room_id, r)),
            )),
        ));
        if let Some(author) = request.author_id {
            clauses.push((Occur::Must, term_query(f.author_id, author)));
        }
        if let Some(t) = request.message_type {
            clauses.push((Occur::Must, term_query(f.kind, kind_code(t))));
        }
        if let Some(has) = request.has_attachment {
            clauses.push((Occur::Must, term_query(f.has_files, u64::from(has))));
        }
        if request.from.is_some() || request.to.is_some() {
            let bound = |v: Option<u64>| match v {
                Some(v) => Bound::Included(Term::from_field_u64(f.created, v)),
                None => Bound::Unbounded,
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(bound(request.from), bound(request.to))),
            ));
        }
        let query = BooleanQuery::new(clauses);
        let limit = request.limit.clamp(1, MAX_LIMIT);
        let top = TopDocs::with_limit(limit).and_offset(request.offset.min(MAX_OFFSET));
        let (addresses, total): (Vec<tantivy::DocAddress>, usize) =
            if request.newest_first || !scored {
                let (hits, total) = searcher.search(
                    &query,
                    &(top.order_by_u64_field("created", Order::Desc), Count),
                )?;
                (hits.into_iter().map(|(_, a)| a).collect(), total)
            } else {
                let (hits, total) = searcher.search(&query, &(top.order_by_score(), Count))?;
                (hits.into_iter().map(|(_, a)| a).collect(), total)
            };
        let snippets = match text_query.as_ref() {
            Some(q) => {
                let mut in_text = SnippetGenerator::create(&searcher, q.as_ref(), f.text)?;
                in_text.set_max_num_chars(SNIPPET_CHARS);
                let in_files = SnippetGenerator::create(&searcher, q.as_ref(), f.files)?;
                Some((in_text, in_files))
            }
            None => None,
        };
        let mut hits = Vec::with_capacity(addresses.len());
        for addr in addresses {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let u = |field: Field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
            let text = doc.get_first(f.text).and_then(|v| v.as_str()).unwrap_or("");
            let files: Vec<&str> = doc.get_all(f.files).filter_map(|v| v.as_str()).collect();
            let (snippet, highlights) = make_snippet(snippets.as_ref(), text, &files);
            hits.push(Hit {
                message_id: u(f.message_id),
                room_id: u(f.room_id),
                parent_message_id: u(f.parent_id),
                author_id: u(f.author_id),
                created_utc: u(f.created),
                snippet,
                highlights,
            });
        }
        Ok(SearchAnswer {
            hits,
            total,
            complete: self.is_complete(),
        })
    }
}

/// At most this many characters of text around the best match.
const SNIPPET_CHARS: usize = 160;

/// The snippet of a hit (from its text, else from its file names, else the text's start)
/// and its highlighted ranges in UTF-16 code units (what a browser's strings count).
fn make_snippet(
    generators: Option<&(SnippetGenerator, SnippetGenerator)>,
    text: &str,
    files: &[&str],
) -> (String, Vec<[usize; 2]>) {
    if let Some((in_text, in_files)) = generators {
        let s = in_text.snippet(text);
        if !s.highlighted().is_empty() {
            return with_utf16_ranges(&s);
        }
        let joined = files.join(", ");
        let s = in_files.snippet(&joined);
        if !s.highlighted().is_empty() {
            return with_utf16_ranges(&s);
        }
    }
    let mut end = text.len().min(SNIPPET_CHARS);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), Vec::new())
}

fn with_utf16_ranges(s: &tantivy::snippet::Snippet) -> (String, Vec<[usize; 2]>) {
    let fragment = s.fragment();
    let utf16 = |byte: usize| fragment.get(..byte).map_or(0, |p| p.encode_utf16().count());
    let ranges = s
        .highlighted()
        .iter()
        .map(|r| [utf16(r.start), utf16(r.end)])
        .collect();
    (fragment.to_string(), ranges)
}

fn term_query(field: Field, value: u64) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_u64(field, value),
        IndexRecordOption::Basic,
    ))
}

fn open_existing(
    dir: &Path,
    expected: &Schema,
) -> std::result::Result<(Index, Option<u64>), String> {
    if !dir.join("meta.json").exists() {
        return Err("no index yet".into());
    }
    let index = Index::open_in_dir(dir).map_err(|e| e.to_string())?;
    if index.schema() != *expected {
        return Err("it was made by another version".into());
    }
    let metas = index.load_metas().map_err(|e| e.to_string())?;
    let payload: Option<Payload> = metas
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok());
    match payload {
        Some(p) if p.format == FORMAT => {
            // Every segment must be readable: a damaged file is found now, not mid-query.
            let reader = index.reader().map_err(|e| e.to_string())?;
            for segment in reader.searcher().segment_readers() {
                segment
                    .get_store_reader(0)
                    .map_err(|e| format!("segment {}: {e}", segment.segment_id()))?;
            }
            Ok((index, Some(p.cursor)))
        }
        Some(_) => Err("it was made by another version".into()),
        None => Err("it was never completed".into()),
    }
}

/// A search as `GET /api/v1/search` asks it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub q: String,
    pub author_id: Option<UserId>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub message_type: Option<MessageType>,
    pub has_attachment: Option<bool>,
    pub newest_first: bool,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    pub message_id: MessageId,
    pub room_id: RoomId,
    /// 0 for a top-level message.
    pub parent_message_id: MessageId,
    pub author_id: UserId,
    pub created_utc: u64,
    pub snippet: String,
    pub highlights: Vec<[usize; 2]>,
}

#[derive(Debug, Clone)]
pub struct SearchAnswer {
    pub hits: Vec<Hit>,
    /// How many documents matched (before `limit` and `offset`).
    pub total: usize,
    /// False while the index is being rebuilt.
    pub complete: bool,
}

/// Reads the file names of a message's attachments (what `files` holds).
pub fn file_names(
    reader: &crate::storage::Reader,
    id: MessageId,
) -> crate::storage::Result<Vec<String>> {
    Ok(reader
        .attachments_of(id)?
        .into_iter()
        .map(|a| a.file_name)
        .collect())
}
