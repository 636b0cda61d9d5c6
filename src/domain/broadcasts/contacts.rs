//! Contact lists from CSV (`phone_number`, `full_name`, every other column a variable),
//! imported without holding the file in memory: the upload is spooled to a temporary file as
//! it arrives (bounded), the list is created `processing`, and a blocking task reads the file
//! row by row and writes batches of contacts and refused rows with the counts so far, then
//! ends the list `success` (or `failed`, with why). Numbers are normalized as SAK numbers
//! are; a number given twice is one contact (the later row's values win).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value};

use crate::domain::Gateway;
use crate::domain::auth::Caller;
use crate::domain::messaging::{normalize_phone, normalize_recipient};
use crate::domain::text::no_nul;
use crate::error::{Error, Result};
use crate::storage::contact_lists::{
    self as store, ContactListRow, ContactRow, Counts, PROCESSING, RejectRow,
};
use crate::storage::{Db, now_ms};
use crate::values::ContactListId;

/// Largest CSV upload (a 100,000-row list with a dozen variables fits in a tenth of it).
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Rows one list may have.
pub const MAX_ROWS: i64 = 200_000;
/// Variable columns one list may have.
pub const MAX_COLUMNS: usize = 50;
/// Rows written per transaction.
const BATCH: usize = 1000;
/// Longest value of one cell.
const MAX_VALUE: usize = 1024;
/// Refused rows shown with a list.
pub const SHOWN_REJECTS: i64 = 100;
/// Lists per page at most.
pub const MAX_PAGE: i64 = 100;

#[derive(Debug, Clone)]
pub struct ContactListView {
    pub id: ContactListId,
    pub name: String,
    pub source_type: String,
    /// processing, success or failed.
    pub progress: String,
    pub rows_total: i64,
    pub accepted: i64,
    pub rejected: i64,
    pub duplicates: i64,
    pub variables: Vec<String>,
    pub error_message: Option<String>,
    /// The first refused rows: (row number, number as given, reason).
    pub rejections: Vec<(i64, String, String)>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

fn view(r: ContactListRow, rejects: Vec<RejectRow>) -> ContactListView {
    ContactListView {
        variables: serde_json::from_str(&r.variables).unwrap_or_default(),
        rejections: rejects
            .into_iter()
            .map(|x| (x.row_no, x.phone, x.reason))
            .collect(),
        id: r.id,
        name: r.name,
        source_type: r.source_type,
        progress: r.progress,
        rows_total: r.rows_total,
        accepted: r.accepted,
        rejected: r.rejected,
        duplicates: r.duplicates,
        error_message: r.error_message,
        created_at: r.created_at,
        updated_at: r.updated_at,
        finished_at: r.finished_at,
    }
}

/// An upload on disk (from [`spool`]) until it is imported; removed when dropped.
pub struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes an upload to a temporary file as it arrives, refusing more than
/// [`MAX_UPLOAD_BYTES`]: the first half of an import, so a surface can stream a file before
/// it knows the list's name (a multipart form may send it last).
pub async fn spool<S>(mut chunks: S) -> Result<Spooled>
where
    S: Stream<Item = Result<Bytes>> + Send + Unpin,
{
    let path = std::env::temp_dir().join(format!("wagate-import-{}.csv", uuid::Uuid::new_v4()));
    let spooled = Spooled(path.clone());
    let mut file = std::fs::File::create(&path).map_err(Error::internal)?;
    let mut size = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        size += chunk.len();
        if size > MAX_UPLOAD_BYTES {
            return Err(Error::MediaTooLarge(MAX_UPLOAD_BYTES));
        }
        // Small writes to a local file: buffered by the OS, not worth a blocking task each.
        file.write_all(&chunk).map_err(Error::internal)?;
    }
    file.sync_data().map_err(Error::internal)?;
    Ok(spooled)
}

/// How a CSV's columns are read.
struct Columns {
    phone: usize,
    name: Option<usize>,
    /// (index, name) of each variable column.
    variables: Vec<(usize, String)>,
}

fn columns(headers: &csv::StringRecord) -> std::result::Result<Columns, String> {
    let (mut phone, mut name, mut variables) = (None, None, Vec::new());
    let mut seen = HashSet::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim_start_matches('\u{feff}').trim();
        if h.is_empty() {
            continue;
        }
        if !seen.insert(h.to_ascii_lowercase()) {
            return Err(format!("the column {h:?} is given twice"));
        }
        match h.to_ascii_lowercase().as_str() {
            "phone_number" | "phone" => phone = Some(i),
            "full_name" | "name" => name = Some(i),
            _ => variables.push((i, h.to_owned())),
        }
    }
    if variables.len() > MAX_COLUMNS {
        return Err(format!("at most {MAX_COLUMNS} variable columns"));
    }
    let phone = phone.ok_or("the file has no phone_number column")?;
    Ok(Columns {
        phone,
        name,
        variables,
    })
}

/// One row as a contact, or why it is refused.
fn contact(
    row: &csv::StringRecord,
    cols: &Columns,
    country_code: &str,
) -> std::result::Result<(String, String, Map<String, Value>), String> {
    let cell = |i: usize| row.get(i).unwrap_or("").trim();
    for v in row.iter() {
        if v.contains('\0') {
            return Err("a value holds U+0000".into());
        }
        if v.chars().count() > MAX_VALUE {
            return Err(format!("a value is longer than {MAX_VALUE} characters"));
        }
    }
    let raw = cell(cols.phone);
    if raw.is_empty() {
        return Err("phone_number is empty".into());
    }
    if raw.starts_with('0') {
        return Err("a local number (starting with 0): give it with its country code".into());
    }
    normalize_recipient(raw)
        .and_then(|_| normalize_phone(raw, country_code))
        .map_err(|_| "not a phone number: 8 to 15 digits with country code".to_owned())
        .map(|phone| {
            let name = cols.name.map(cell).unwrap_or_default().to_owned();
            let vars = cols
                .variables
                .iter()
                .map(|(i, n)| (n.clone(), Value::String(cell(*i).to_owned())))
                .collect();
            (phone, name, vars)
        })
}

/// Reads the spooled file and writes the list's contacts; `Err` is why the import failed.
fn import(
    db: &Db,
    id: &ContactListId,
    file: &Spooled,
    country_code: &str,
) -> std::result::Result<Vec<String>, String> {
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let reader = std::fs::File::open(&file.0).map_err(|e| e.to_string())?;
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(std::io::BufReader::new(reader));
    let headers = csv
        .headers()
        .map_err(|e| format!("cannot read the header row: {e}"))?
        .clone();
    let cols = columns(&headers)?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut counts = Counts::default();
    let (mut contacts, mut rejects) = (Vec::with_capacity(BATCH), Vec::new());
    let mut record = csv::StringRecord::new();
    loop {
        let row_no = counts.rows_total + 2; // the header is row 1
        let outcome = match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => contact(&record, &cols, country_code),
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                record.clear();
                Err("not UTF-8 text".to_owned())
            }
            Err(e) => return Err(format!("row {row_no}: {e}")),
        };
        counts.rows_total += 1;
        if counts.rows_total > MAX_ROWS {
            return Err(format!("more than {MAX_ROWS} rows"));
        }
        match outcome {
            Ok((phone, full_name, vars)) => {
                if seen.insert(phone.clone()) {
                    counts.accepted += 1;
                } else {
                    counts.duplicates += 1;
                }
                contacts.push(ContactRow {
                    list_id: id.clone(),
                    phone,
                    full_name,
                    variables: Value::Object(vars).to_string(),
                    row_no,
                });
            }
            Err(reason) => {
                counts.rejected += 1;
                let given = record.get(cols.phone).unwrap_or("").trim();
                rejects.push(RejectRow {
                    list_id: id.clone(),
                    row_no,
                    phone: given.chars().take(64).filter(|c| *c != '\0').collect(),
                    reason,
                });
            }
        }
        if contacts.len() + rejects.len() >= BATCH {
            // One batch may hold a number twice; the upsert takes one row per statement.
            dedup_last(&mut contacts);
            store::write_batch(&mut conn, id, &contacts, &rejects, counts, now_ms())
                .map_err(|e| e.to_string())?;
            contacts.clear();
            rejects.clear();
        }
    }
    dedup_last(&mut contacts);
    store::write_batch(&mut conn, id, &contacts, &rejects, counts, now_ms())
        .map_err(|e| e.to_string())?;
    Ok(cols.variables.into_iter().map(|(_, n)| n).collect())
}

/// Keeps the last row of each number in a batch (PostgreSQL refuses an upsert that touches
/// one row twice).
fn dedup_last(rows: &mut Vec<ContactRow>) {
    let mut seen = HashSet::new();
    let mut kept: Vec<ContactRow> = rows
        .drain(..)
        .rev()
        .filter(|r| seen.insert(r.phone.clone()))
        .collect();
    kept.reverse();
    *rows = kept;
}

impl Gateway {
    /// Creates a list from a spooled CSV; the answer is the list `processing`, and the
    /// import goes on in the background. A broken or oversized upload created nothing.
    pub async fn import_contact_list(
        &self,
        caller: &Caller,
        name: &str,
        source_type: &str,
        spooled: Spooled,
    ) -> Result<ContactListView> {
        no_nul("name", name)?;
        no_nul("source_type", source_type)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 256 {
            return Err(Error::InvalidRequest(
                "name is required (at most 256 characters)".into(),
            ));
        }
        let now = now_ms();
        let row = ContactListRow {
            id: ContactListId::new(uuid::Uuid::now_v7().to_string()),
            project_id: caller.project.row.id.clone(),
            name: name.to_owned(),
            source_type: if source_type.trim().is_empty() {
                "spreadsheet".into()
            } else {
                source_type.trim().chars().take(64).collect()
            },
            progress: PROCESSING.into(),
            node_id: self.node_id().to_owned(),
            rows_total: 0,
            accepted: 0,
            rejected: 0,
            duplicates: 0,
            variables: "[]".into(),
            error_message: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        let stored = row.clone();
        self.db().run(move |c| store::insert(c, &stored)).await?;
        let (db, id) = (self.db().clone(), row.id.clone());
        let country_code = self.settings().default_country_code.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = import(&db, &id, &spooled, &country_code);
            drop(spooled);
            let (variables, error) = match outcome {
                Ok(vars) => (vars, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            if let Some(e) = &error {
                tracing::warn!(list = %id, error = %e, "contact list import failed");
            }
            let vars = serde_json::to_string(&variables).unwrap_or_else(|_| "[]".into());
            let finished = db.get().map_err(|e| e.to_string()).and_then(|mut c| {
                store::finish(&mut c, &id, &vars, error.as_deref(), now_ms())
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = finished {
                tracing::error!(list = %id, error = %e, "cannot record the end of a contact list import");
            }
        });
        Ok(view(row, Vec::new()))
    }

    pub async fn get_contact_list(
        &self,
        caller: &Caller,
        id: &ContactListId,
    ) -> Result<ContactListView> {
        no_nul("contact list id", id)?;
        let (p, id) = (caller.project.row.id.clone(), id.clone());
        let (row, rejects) = self
            .db()
            .run(move |c| {
                let Some(row) = store::get(c, &p, &id)? else {
                    return Ok(None);
                };
                let rejects = store::rejects(c, &id, SHOWN_REJECTS)?;
                Ok(Some((row, rejects)))
            })
            .await?
            .ok_or(Error::ContactListNotFound)?;
        Ok(view(row, rejects))
    }

    pub async fn list_contact_lists(
        &self,
        caller: &Caller,
        skip: i64,
        limit: i64,
    ) -> Result<(Vec<ContactListView>, i64)> {
        let p = caller.project.row.id.clone();
        let (skip, limit) = (skip.max(0), limit.clamp(1, MAX_PAGE));
        let (rows, total) = self
            .db()
            .run(move |c| store::list(c, &p, skip, limit))
            .await?;
        Ok((
            rows.into_iter().map(|r| view(r, Vec::new())).collect(),
            total,
        ))
    }

    /// At start: imports this node had running when it stopped are failed (their upload was
    /// in a temporary file of the old process).
    pub async fn fail_interrupted_imports(&self) -> Result<usize> {
        let node = self.node_id().to_owned();
        self.db()
            .run(move |c| store::fail_interrupted(c, &node, now_ms()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fields: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(fields.to_vec())
    }

    #[test]
    fn columns_are_phone_name_and_variables() {
        let c = columns(&rec(&["\u{feff}full_name", "Phone_Number", "company", ""])).unwrap();
        assert_eq!((c.phone, c.name), (1, Some(0)));
        assert_eq!(c.variables, vec![(2, "company".to_owned())]);
        assert!(columns(&rec(&["full_name", "company"])).is_err());
        assert!(columns(&rec(&["phone", "x", "X"])).is_err());
    }

    #[test]
    fn rows_are_normalized_or_refused_with_a_reason() {
        let c = columns(&rec(&["phone_number", "full_name", "city"])).unwrap();
        let (phone, name, vars) =
            contact(&rec(&["+62 812-3456-7890", " Ana ", "Bandung"]), &c, "62").unwrap();
        assert_eq!((phone.as_str(), name.as_str()), ("6281234567890", "Ana"));
        assert_eq!(vars["city"], "Bandung");
        let (phone, ..) = contact(&rec(&["8123456789", "B", ""]), &c, "62").unwrap();
        assert_eq!(phone, "628123456789");
        for bad in ["", "0812345678", "12ab", "123"] {
            let why = contact(&rec(&[bad, "x", ""]), &c, "62").unwrap_err();
            assert!(!why.is_empty(), "{bad}");
        }
    }
}
