//! Splits, parquet files and the dataset card, in the layout the Hugging Face Hub
//! reads: `data/{split}-00000-of-00001.parquet` and a `README.md` whose YAML header
//! names the splits and features.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::rows::{SlotValues, TurnRow};

/// One split: its name and its rows.
pub struct Split {
    /// `train`, `train_minus_N` or `valid_N`.
    pub name: String,
    /// Its rows, in dialogue and turn order.
    pub rows: Vec<TurnRow>,
}

/// `train`, and with `validation` dialogues also `train_minus_N` and `valid_N`: the
/// dialogues are shuffled with `seed` (by id, so the input order does not matter) and
/// the first N validate.
pub fn splits(
    rows: Vec<TurnRow>,
    validation: Option<usize>,
    seed: u64,
) -> anyhow::Result<Vec<Split>> {
    let mut out = vec![Split {
        name: "train".into(),
        rows: rows.clone(),
    }];
    let Some(n) = validation else {
        return Ok(out);
    };
    let mut dialogues: Vec<String> = rows
        .iter()
        .map(|r| r.dialogue_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if n == 0 || n >= dialogues.len() {
        anyhow::bail!(
            "--validation-dialogues {n}: the group has {} dialogues; keep some for training",
            dialogues.len()
        );
    }
    labelfleet_core::rng::shuffle(&mut dialogues, seed);
    let valid: HashSet<&String> = dialogues[..n].iter().collect();
    let (v, t): (Vec<TurnRow>, Vec<TurnRow>) = rows
        .into_iter()
        .partition(|r| valid.contains(&r.dialogue_id));
    out.push(Split {
        name: format!("train_minus_{n}"),
        rows: t,
    });
    out.push(Split {
        name: format!("valid_{n}"),
        rows: v,
    });
    Ok(out)
}

const STATE_COLUMNS: [&str; 3] = ["turn_slot_values", "slot_values", "last_slot_values"];

/// The fields of the state structs: every MultiWOZ slot, so that every export has the
/// same schema (and a struct never lacks fields), plus any other slot a row has.
fn slot_names(rows: &[TurnRow]) -> Vec<String> {
    let schema = labelfleet_dst::prompt::MULTIWOZ_SCHEMA
        .iter()
        .flat_map(|(domain, slots)| slots.iter().map(move |s| format!("{domain}-{s}")));
    rows.iter()
        .flat_map(|r| {
            r.turn_slot_values
                .keys()
                .chain(r.slot_values.keys())
                .chain(r.last_slot_values.keys())
        })
        .cloned()
        .chain(schema)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn strings() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn state_type(slots: &[String]) -> DataType {
    // A struct with a field per slot (absent slots are null), as `datasets` builds
    // from a list of dicts.
    DataType::Struct(Fields::from(
        slots
            .iter()
            .map(|s| Field::new(s, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

fn schema(slots: &[String]) -> Schema {
    let mut fields = vec![
        Field::new("dialogue_id", DataType::Utf8, false),
        Field::new("turn_id", DataType::Int64, false),
        Field::new("user_utterances", strings(), false),
        Field::new("system_utterances", strings(), false),
        Field::new("system_response", DataType::Utf8, false),
        Field::new("system_response_acts", strings(), false),
    ];
    for column in STATE_COLUMNS {
        fields.push(Field::new(column, state_type(slots), false));
    }
    fields.push(Field::new("domains", strings(), false));
    fields.push(Field::new("last_system_response_acts", strings(), false));
    fields.push(Field::new("source", DataType::Utf8, false));
    Schema::new(fields)
}

fn list(values: impl Iterator<Item = Vec<String>>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for items in values {
        for item in items {
            builder.values().append_value(item);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn state(rows: &[TurnRow], slots: &[String], pick: fn(&TurnRow) -> &SlotValues) -> ArrayRef {
    let fields: Vec<Field> = slots
        .iter()
        .map(|s| Field::new(s, DataType::Utf8, true))
        .collect();
    let arrays: Vec<ArrayRef> = slots
        .iter()
        .map(|slot| {
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| pick(r).get(slot).map(String::as_str))
                    .collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    Arc::new(StructArray::new(Fields::from(fields), arrays, None))
}

fn batch(rows: &[TurnRow], slots: &[String]) -> anyhow::Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.dialogue_id.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.turn_id))),
        list(rows.iter().map(|r| r.user_utterances.clone())),
        list(rows.iter().map(|r| r.system_utterances.clone())),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.system_response.as_str()),
        )),
        list(rows.iter().map(|r| r.system_response_acts.clone())),
        state(rows, slots, |r| &r.turn_slot_values),
        state(rows, slots, |r| &r.slot_values),
        state(rows, slots, |r| &r.last_slot_values),
        list(rows.iter().map(|r| r.domains.clone())),
        list(rows.iter().map(|r| r.last_system_response_acts.clone())),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.source.as_str()),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema(slots)), columns)?)
}

/// What the card says besides the splits: the dataset's name, the entries it merges
/// (a line each) and the first job's config.
pub struct Card {
    /// `owner/name`.
    pub name: String,
    /// The manifest group.
    pub group: String,
    /// One line per merged manifest entry.
    pub provenance: Vec<String>,
    /// The first job's resolved config, as JSON.
    pub first_config: Option<serde_json::Value>,
}

fn feature_yaml(slots: &[String]) -> String {
    let mut y = String::from("  features:\n");
    for (name, dtype) in [("dialogue_id", "string"), ("turn_id", "int64")] {
        y.push_str(&format!("  - name: {name}\n    dtype: {dtype}\n"));
    }
    for name in ["user_utterances", "system_utterances"] {
        y.push_str(&format!("  - name: {name}\n    sequence: string\n"));
    }
    y.push_str("  - name: system_response\n    dtype: string\n");
    y.push_str("  - name: system_response_acts\n    sequence: string\n");
    for column in STATE_COLUMNS {
        y.push_str(&format!("  - name: {column}\n    struct:\n"));
        for slot in slots {
            y.push_str(&format!("    - name: {slot}\n      dtype: string\n"));
        }
    }
    for name in ["domains", "last_system_response_acts"] {
        y.push_str(&format!("  - name: {name}\n    sequence: string\n"));
    }
    y.push_str("  - name: source\n    dtype: string\n");
    y
}

/// The card: YAML metadata in the layout the Hub and `datasets` read (every split
/// with its `name`, `num_bytes` and `num_examples`; the sizes in bytes of the parquet
/// files, `split_bytes` in split order), then a description.
fn card_text(card: &Card, splits: &[Split], slots: &[String], split_bytes: &[u64]) -> String {
    let mut y = String::from("---\nconfigs:\n- config_name: default\n  data_files:\n");
    for s in splits {
        y.push_str(&format!(
            "  - split: {}\n    path: data/{}-*\n",
            s.name, s.name
        ));
    }
    y.push_str("dataset_info:\n");
    y.push_str(&feature_yaml(slots));
    y.push_str("  splits:\n");
    for (s, bytes) in splits.iter().zip(split_bytes) {
        y.push_str(&format!(
            "  - name: {}\n    num_bytes: {bytes}\n    num_examples: {}\n",
            s.name,
            s.rows.len()
        ));
    }
    let total: u64 = split_bytes.iter().sum();
    y.push_str(&format!(
        "  download_size: {total}\n  dataset_size: {total}\n---\n\n"
    ));
    y.push_str(&format!("# {}\n\n", card.name));
    y.push_str(&format!(
        "Dialogue state tracking labels produced by labelfleet `self_label` jobs of manifest group `{}`: one row per user turn, the belief state as the model labelled it.\n\n",
        card.group
    ));
    y.push_str("| split | turns | dialogues |\n|---|---|---|\n");
    for s in splits {
        y.push_str(&format!(
            "| {} | {} | {} |\n",
            s.name,
            s.rows.len(),
            super::dialogue_count(&s.rows)
        ));
    }
    y.push_str("\n## Provenance\n\nThe manifest entries merged here:\n\n");
    for line in &card.provenance {
        y.push_str(&format!("- {line}\n"));
    }
    if let Some(config) = &card.first_config {
        y.push_str("\n## The first job's config\n\n```json\n");
        y.push_str(&serde_json::to_string_pretty(config).expect("config serialises"));
        y.push_str("\n```\n");
    }
    y
}

/// Writes the splits as parquet under `dir/data/` and the card as `dir/README.md`;
/// returns the files written, relative to `dir`.
pub fn write_dataset(dir: &Path, splits: &[Split], card: &Card) -> anyhow::Result<Vec<PathBuf>> {
    let all: Vec<TurnRow> = splits.iter().flat_map(|s| s.rows.clone()).collect();
    let slots = slot_names(&all);
    std::fs::create_dir_all(dir.join("data"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    let mut split_bytes = Vec::new();
    for split in splits {
        let relative = PathBuf::from(format!("data/{}-00000-of-00001.parquet", split.name));
        let path = dir.join(&relative);
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let batch = batch(&split.rows, &slots)?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
        writer.write(&batch)?;
        writer.close()?;
        split_bytes.push(std::fs::metadata(&path)?.len());
        files.push(relative);
    }
    std::fs::write(
        dir.join("README.md"),
        card_text(card, splits, &slots, &split_bytes),
    )?;
    files.push(PathBuf::from("README.md"));
    Ok(files)
}
