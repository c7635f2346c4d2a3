//! Writing the kept rows: one parquet file (what `upload-dataset` and the Hugging Face
//! Hub read) and JSON lines (what a script with no parquet reader reads).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use serde_json::{Map, Value};

use crate::logs::LogRow;

/// Writes the rows as one parquet file: `session`, then every column any CSV had
/// (null where a CSV lacked it).
pub fn write_parquet(path: &Path, rows: &[LogRow]) -> anyhow::Result<()> {
    let columns: Vec<String> = rows
        .iter()
        .flat_map(|r| r.fields.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut fields = vec![Field::new("session", DataType::Utf8, false)];
    fields.extend(columns.iter().map(|c| Field::new(c, DataType::Utf8, true)));
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.session.as_str()),
    ))];
    for column in &columns {
        arrays.push(Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.fields.get(column).map(String::as_str))
                .collect::<Vec<_>>(),
        )));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// Writes the rows as JSON lines: `{"session": …, "<column>": …}` per row.
pub fn write_jsonl(path: &Path, rows: &[LogRow]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for row in rows {
        let mut line = Map::new();
        line.insert("session".into(), Value::from(row.session.clone()));
        for (column, value) in &row.fields {
            line.insert(column.clone(), Value::from(value.clone()));
        }
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
