//! Parquet tables: typed columns in, Parquet files out (and back).
//!
//! Every table cortexmap writes (CONTRACT.md) goes through [`write_table`] or the
//! streaming [`TableWriter`], so all outputs share one convention: arrow-rs schemas
//! built from typed [`Column`]s, Snappy compression, and atomic publication (temp file,
//! then rename). Stages build a [`Table`] from their typed rows; only this module
//! knows Parquet. [`read_table`] reads any of our tables back into the same columns.

use crate::error::{Error, Result};
use crate::io::atomic::AtomicFile;
use arrow_array::builder::{Float32Builder, ListBuilder, UInt32Builder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One typed column. `Opt*` variants are nullable; `List*` are list columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Bool(Vec<bool>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Str(Vec<String>),
    OptU32(Vec<Option<u32>>),
    OptI32(Vec<Option<i32>>),
    OptF32(Vec<Option<f32>>),
    OptBool(Vec<Option<bool>>),
    ListU32(Vec<Vec<u32>>),
    ListF32(Vec<Vec<f32>>),
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Bool(v) => v.len(),
            Column::U16(v) => v.len(),
            Column::U32(v) => v.len(),
            Column::U64(v) => v.len(),
            Column::I32(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::F32(v) => v.len(),
            Column::F64(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::OptU32(v) => v.len(),
            Column::OptI32(v) => v.len(),
            Column::OptF32(v) => v.len(),
            Column::OptBool(v) => v.len(),
            Column::ListU32(v) => v.len(),
            Column::ListF32(v) => v.len(),
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn data_type(&self) -> DataType {
        match self {
            Column::Bool(_) | Column::OptBool(_) => DataType::Boolean,
            Column::U16(_) => DataType::UInt16,
            Column::U32(_) | Column::OptU32(_) => DataType::UInt32,
            Column::U64(_) => DataType::UInt64,
            Column::I32(_) | Column::OptI32(_) => DataType::Int32,
            Column::I64(_) => DataType::Int64,
            Column::F32(_) | Column::OptF32(_) => DataType::Float32,
            Column::F64(_) => DataType::Float64,
            Column::Str(_) => DataType::Utf8,
            Column::ListU32(_) => DataType::List(list_item(DataType::UInt32)),
            Column::ListF32(_) => DataType::List(list_item(DataType::Float32)),
        }
    }

    fn nullable(&self) -> bool {
        matches!(
            self,
            Column::OptU32(_) | Column::OptI32(_) | Column::OptF32(_) | Column::OptBool(_)
        )
    }

    fn to_arrow(&self) -> ArrayRef {
        match self {
            Column::Bool(v) => Arc::new(BooleanArray::from(v.clone())),
            Column::U16(v) => Arc::new(UInt16Array::from(v.clone())),
            Column::U32(v) => Arc::new(UInt32Array::from(v.clone())),
            Column::U64(v) => Arc::new(UInt64Array::from(v.clone())),
            Column::I32(v) => Arc::new(Int32Array::from(v.clone())),
            Column::I64(v) => Arc::new(Int64Array::from(v.clone())),
            Column::F32(v) => Arc::new(Float32Array::from(v.clone())),
            Column::F64(v) => Arc::new(Float64Array::from(v.clone())),
            Column::Str(v) => Arc::new(StringArray::from_iter_values(v.iter())),
            Column::OptU32(v) => Arc::new(UInt32Array::from(v.clone())),
            Column::OptI32(v) => Arc::new(Int32Array::from(v.clone())),
            Column::OptF32(v) => Arc::new(Float32Array::from(v.clone())),
            Column::OptBool(v) => Arc::new(BooleanArray::from(v.clone())),
            Column::ListU32(v) => {
                let mut b =
                    ListBuilder::new(UInt32Builder::new()).with_field(list_item(DataType::UInt32));
                for row in v {
                    b.values().append_slice(row);
                    b.append(true);
                }
                Arc::new(b.finish())
            }
            Column::ListF32(v) => {
                let mut b = ListBuilder::new(Float32Builder::new())
                    .with_field(list_item(DataType::Float32));
                for row in v {
                    b.values().append_slice(row);
                    b.append(true);
                }
                Arc::new(b.finish())
            }
        }
    }
}

fn list_item(dt: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", dt, false))
}

/// A table: named, equally long columns in a fixed order.
///
/// ```
/// use cortexmap::io::table::{read_table, write_table, Column, Table};
/// let dir = std::env::temp_dir().join(format!("cortexmap-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("example.parquet");
/// let t = Table::new()
///     .with("session", Column::Str(vec!["d1".into(), "d1".into()]))
///     .with("frame", Column::U32(vec![0, 1]))
///     .with("shift_x", Column::F32(vec![0.25, -0.5]));
/// write_table(&path, &t).unwrap();
/// assert_eq!(read_table(&path).unwrap(), t);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder-style: append a column.
    pub fn with(mut self, name: &str, column: Column) -> Self {
        self.columns.push((name.to_string(), column));
        self
    }

    /// Number of rows (0 for a table without columns).
    pub fn n_rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    /// Every column with its name, in order.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &Column)> {
        self.columns.iter().map(|(n, c)| (n.as_str(), c))
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|(n, c)| Field::new(n, c.data_type(), c.nullable()))
            .collect();
        Arc::new(Schema::new(fields))
    }

    fn check_lengths(&self) -> Result<()> {
        let n = self.n_rows();
        match self.columns.iter().find(|(_, c)| c.len() != n) {
            Some((name, c)) => Err(Error::internal(format!(
                "table column '{name}' has {} rows, expected {n}",
                c.len()
            ))),
            None => Ok(()),
        }
    }

    fn to_batch(&self, schema: SchemaRef) -> Result<RecordBatch> {
        self.check_lengths()?;
        let arrays: Vec<ArrayRef> = self.columns.iter().map(|(_, c)| c.to_arrow()).collect();
        RecordBatch::try_new(schema, arrays).map_err(|e| Error::internal(e.to_string()))
    }
}

/// Typed accessors used by readers of our own tables; the error names the file.
impl Table {
    fn typed<'a, T>(
        &'a self,
        path: &Path,
        name: &str,
        pick: impl Fn(&'a Column) -> Option<&'a [T]>,
        what: &str,
    ) -> Result<&'a [T]> {
        let col = self
            .column(name)
            .ok_or_else(|| Error::input(path, format!("missing column '{name}'")))?;
        pick(col).ok_or_else(|| Error::input(path, format!("column '{name}' is not {what}")))
    }

    /// Column `name` as f32 values.
    pub fn f32s(&self, path: &Path, name: &str) -> Result<&[f32]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::F32(v) => Some(v.as_slice()),
                _ => None,
            },
            "float32",
        )
    }

    /// Column `name` as f64 values.
    pub fn f64s(&self, path: &Path, name: &str) -> Result<&[f64]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::F64(v) => Some(v.as_slice()),
                _ => None,
            },
            "float64",
        )
    }

    /// Column `name` as u32 values.
    pub fn u32s(&self, path: &Path, name: &str) -> Result<&[u32]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::U32(v) => Some(v.as_slice()),
                _ => None,
            },
            "uint32",
        )
    }

    /// Column `name` as i32 values.
    pub fn i32s(&self, path: &Path, name: &str) -> Result<&[i32]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::I32(v) => Some(v.as_slice()),
                _ => None,
            },
            "int32",
        )
    }

    /// Column `name` as booleans.
    pub fn bools(&self, path: &Path, name: &str) -> Result<&[bool]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::Bool(v) => Some(v.as_slice()),
                _ => None,
            },
            "boolean",
        )
    }

    /// Column `name` as strings.
    pub fn strs(&self, path: &Path, name: &str) -> Result<&[String]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::Str(v) => Some(v.as_slice()),
                _ => None,
            },
            "a string column",
        )
    }

    /// Column `name` as nullable u32 values.
    pub fn opt_u32s(&self, path: &Path, name: &str) -> Result<&[Option<u32>]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::OptU32(v) => Some(v.as_slice()),
                _ => None,
            },
            "nullable uint32",
        )
    }

    /// Column `name` as nullable i32 values.
    pub fn opt_i32s(&self, path: &Path, name: &str) -> Result<&[Option<i32>]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::OptI32(v) => Some(v.as_slice()),
                _ => None,
            },
            "nullable int32",
        )
    }

    /// Column `name` as nullable f32 values.
    pub fn opt_f32s(&self, path: &Path, name: &str) -> Result<&[Option<f32>]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::OptF32(v) => Some(v.as_slice()),
                _ => None,
            },
            "nullable float32",
        )
    }

    /// Column `name` as nullable booleans.
    pub fn opt_bools(&self, path: &Path, name: &str) -> Result<&[Option<bool>]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::OptBool(v) => Some(v.as_slice()),
                _ => None,
            },
            "nullable boolean",
        )
    }

    /// Column `name` as lists of u32.
    pub fn lists_u32(&self, path: &Path, name: &str) -> Result<&[Vec<u32>]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::ListU32(v) => Some(v.as_slice()),
                _ => None,
            },
            "a list<uint32> column",
        )
    }

    /// Column `name` as lists of f32.
    pub fn lists_f32(&self, path: &Path, name: &str) -> Result<&[Vec<f32>]> {
        self.typed(
            path,
            name,
            |c| match c {
                Column::ListF32(v) => Some(v.as_slice()),
                _ => None,
            },
            "a list<float32> column",
        )
    }
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("cortexmap {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Streams batches of rows into one Parquet file; the file appears on `finish`.
///
/// Every batch must have the columns (names and types) of the first one. Each
/// batch becomes at least one row group, so memory is bounded by the batch.
pub struct TableWriter {
    path: PathBuf,
    schema: Option<SchemaRef>,
    writer: Option<ArrowWriter<AtomicFile>>,
    rows: usize,
}

impl TableWriter {
    /// Start a table at `path` (its folder must exist).
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        Ok(TableWriter {
            path: path.as_ref().to_path_buf(),
            schema: None,
            writer: None,
            rows: 0,
        })
    }

    /// Append a batch of rows.
    pub fn write(&mut self, table: &Table) -> Result<()> {
        if self.writer.is_none() {
            let schema = table.schema();
            let file = AtomicFile::create(&self.path)?;
            let w = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties()))
                .map_err(|e| Error::output(&self.path, e))?;
            self.schema = Some(schema);
            self.writer = Some(w);
        }
        let schema = self.schema.clone().expect("schema set with writer");
        if table.schema() != schema {
            return Err(Error::internal(format!(
                "{}: batch columns differ from the first batch's",
                self.path.display()
            )));
        }
        let batch = table.to_batch(schema)?;
        self.rows += batch.num_rows();
        let w = self.writer.as_mut().expect("writer created above");
        w.write(&batch).map_err(|e| Error::output(&self.path, e))?;
        // Bound memory: a row group per batch instead of buffering the whole table.
        w.flush().map_err(|e| Error::output(&self.path, e))
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Close the file and publish it. A writer that received no batch writes
    /// `empty`'s schema with zero rows, so the table always exists.
    pub fn finish(mut self, empty: &Table) -> Result<()> {
        if self.writer.is_none() {
            self.write(empty)?;
        }
        let w = self.writer.take().expect("writer exists");
        let file = w.into_inner().map_err(|e| Error::output(&self.path, e))?;
        file.commit()
    }
}

/// Write a whole table atomically.
pub fn write_table(path: impl AsRef<Path>, table: &Table) -> Result<()> {
    let mut w = TableWriter::create(path)?;
    w.write(table)?;
    w.finish(table)
}

/// Write several tables that belong together: each is written in full beside its
/// destination first, and only when all are written are they renamed into place,
/// so a failure leaves the previous set (or none), never a mix of old and new.
pub fn write_tables_as_set(tables: &[(&Path, &Table)]) -> Result<()> {
    let staged: Vec<PathBuf> = tables
        .iter()
        .map(|(p, _)| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            p.with_file_name(format!(
                ".{}.staged-{}",
                name.unwrap_or_default(),
                std::process::id()
            ))
        })
        .collect();
    let written = tables
        .iter()
        .zip(&staged)
        .try_for_each(|((_, t), s)| write_table(s, t));
    let published = written.and_then(|()| {
        tables
            .iter()
            .zip(&staged)
            .try_for_each(|((p, _), s)| std::fs::rename(s, p).map_err(|e| Error::output(p, e)))
    });
    if published.is_err() {
        for s in &staged {
            let _ = std::fs::remove_file(s);
        }
    }
    published
}

/// Read a Parquet table written by cortexmap (or any table with supported types).
pub fn read_table(path: impl AsRef<Path>) -> Result<Table> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::input(path, e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let reader = builder
        .build()
        .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}")))?;
    let mut table = Table {
        columns: schema
            .fields()
            .iter()
            .map(|f| Ok((f.name().clone(), empty_column(path, f)?)))
            .collect::<Result<_>>()?,
    };
    for batch in reader {
        let batch = batch.map_err(|e| Error::input(path, e.to_string()))?;
        for (i, (_, col)) in table.columns.iter_mut().enumerate() {
            append_arrow(path, col, batch.column(i).as_ref())?;
        }
    }
    Ok(table)
}

/// Stream a Parquet table batch by batch, reading only `columns` (in the file's
/// order), so memory is bounded by a row group rather than the table. The error
/// names the file and a missing column.
pub fn for_each_batch(
    path: impl AsRef<Path>,
    columns: &[&str],
    mut f: impl FnMut(&Table) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::input(path, e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let mut picked = Vec::with_capacity(columns.len());
    for name in columns {
        let i = schema
            .fields()
            .iter()
            .position(|f| f.name() == name)
            .ok_or_else(|| Error::input(path, format!("missing column '{name}'")))?;
        picked.push(i);
    }
    picked.sort_unstable();
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), picked.clone());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}")))?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::input(path, e.to_string()))?;
        let mut table = Table {
            columns: picked
                .iter()
                .map(|&i| {
                    let field = schema.field(i);
                    Ok((field.name().clone(), empty_column(path, field)?))
                })
                .collect::<Result<_>>()?,
        };
        for (k, (_, col)) in table.columns.iter_mut().enumerate() {
            append_arrow(path, col, batch.column(k).as_ref())?;
        }
        f(&table)?;
    }
    Ok(())
}

fn empty_column(path: &Path, field: &Field) -> Result<Column> {
    Ok(match field.data_type() {
        DataType::Boolean if field.is_nullable() => Column::OptBool(vec![]),
        DataType::Boolean => Column::Bool(vec![]),
        DataType::UInt16 => Column::U16(vec![]),
        DataType::UInt32 if field.is_nullable() => Column::OptU32(vec![]),
        DataType::UInt32 => Column::U32(vec![]),
        DataType::UInt64 => Column::U64(vec![]),
        DataType::Int32 if field.is_nullable() => Column::OptI32(vec![]),
        DataType::Int32 => Column::I32(vec![]),
        DataType::Int64 => Column::I64(vec![]),
        DataType::Float32 if field.is_nullable() => Column::OptF32(vec![]),
        DataType::Float32 => Column::F32(vec![]),
        DataType::Float64 => Column::F64(vec![]),
        DataType::Utf8 => Column::Str(vec![]),
        DataType::List(item) if item.data_type() == &DataType::UInt32 => Column::ListU32(vec![]),
        DataType::List(item) if item.data_type() == &DataType::Float32 => Column::ListF32(vec![]),
        other => {
            return Err(Error::input(
                path,
                format!("column '{}' has unsupported type {other}", field.name()),
            ))
        }
    })
}

fn downcast<'a, T: 'static>(path: &Path, a: &'a dyn Array) -> Result<&'a T> {
    a.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Error::input(path, "column type changed between row groups"))
}

fn append_arrow(path: &Path, col: &mut Column, a: &dyn Array) -> Result<()> {
    let no_nulls = |a: &dyn Array| -> Result<()> {
        if a.null_count() > 0 {
            Err(Error::input(path, "unexpected null values"))
        } else {
            Ok(())
        }
    };
    match col {
        Column::OptU32(v) => v.extend(downcast::<UInt32Array>(path, a)?.iter()),
        Column::OptI32(v) => v.extend(downcast::<Int32Array>(path, a)?.iter()),
        Column::OptF32(v) => v.extend(downcast::<Float32Array>(path, a)?.iter()),
        Column::OptBool(v) => v.extend(downcast::<BooleanArray>(path, a)?.iter()),
        Column::ListU32(v) => {
            no_nulls(a)?;
            let list = downcast::<ListArray>(path, a)?;
            for i in 0..list.len() {
                let item = list.value(i);
                v.push(
                    downcast::<UInt32Array>(path, item.as_ref())?
                        .values()
                        .to_vec(),
                );
            }
        }
        Column::ListF32(v) => {
            no_nulls(a)?;
            let list = downcast::<ListArray>(path, a)?;
            for i in 0..list.len() {
                let item = list.value(i);
                v.push(
                    downcast::<Float32Array>(path, item.as_ref())?
                        .values()
                        .to_vec(),
                );
            }
        }
        Column::Str(v) => {
            no_nulls(a)?;
            v.extend(
                downcast::<StringArray>(path, a)?
                    .iter()
                    .map(|s| s.unwrap_or_default().to_string()),
            )
        }
        Column::Bool(v) => {
            no_nulls(a)?;
            v.extend(
                downcast::<BooleanArray>(path, a)?
                    .iter()
                    .map(|b| b.unwrap_or(false)),
            )
        }
        Column::U16(v) => {
            no_nulls(a)?;
            v.extend_from_slice(downcast::<UInt16Array>(path, a)?.values())
        }
        Column::U32(v) => {
            no_nulls(a)?;
            v.extend_from_slice(downcast::<UInt32Array>(path, a)?.values())
        }
        Column::U64(v) => {
            no_nulls(a)?;
            v.extend_from_slice(downcast::<UInt64Array>(path, a)?.values())
        }
        Column::I32(v) => {
            no_nulls(a)?;
            v.extend_from_slice(downcast::<Int32Array>(path, a)?.values())
        }
        Column::I64(v) => {
            no_nulls(a)?;
            v.extend_from_slice(downcast::<Int64Array>(path, a)?.values())
        }
        Column::F32(v) => {
            no_nulls(a)?;
            v.extend_from_slice(downcast::<Float32Array>(path, a)?.values())
        }
        Column::F64(v) => {
            no_nulls(a)?;
            v.extend_from_slice(downcast::<Float64Array>(path, a)?.values())
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_of_tables_is_published_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        let old = Table::new().with("v", Column::U32(vec![1]));
        let new = Table::new().with("v", Column::U32(vec![2, 3]));
        write_tables_as_set(&[(&a, &old), (&b, &old)]).unwrap();
        // The second destination's folder is gone: nothing of the new set appears.
        let missing = dir.path().join("gone").join("b.parquet");
        assert!(write_tables_as_set(&[(&a, &new), (&missing, &new)]).is_err());
        assert_eq!(read_table(&a).unwrap().n_rows(), 1);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        write_tables_as_set(&[(&a, &new), (&b, &new)]).unwrap();
        assert_eq!(read_table(&b).unwrap().n_rows(), 2);
    }

    fn sample() -> Table {
        Table::new()
            .with("session", Column::Str(vec!["d1".into(), "d3".into()]))
            .with("roi", Column::U32(vec![0, 1]))
            .with("day", Column::I32(vec![1, -3]))
            .with("x", Column::F32(vec![1.5, 2.5]))
            .with("p", Column::F64(vec![0.01, 1.0]))
            .with("ok", Column::Bool(vec![true, false]))
            .with("n", Column::U64(vec![5, 6]))
            .with("maybe", Column::OptU32(vec![Some(3), None]))
            .with("maybe_i", Column::OptI32(vec![None, Some(-2)]))
            .with("maybe_f", Column::OptF32(vec![None, Some(0.5)]))
            .with("maybe_b", Column::OptBool(vec![Some(false), None]))
            .with("pixels", Column::ListU32(vec![vec![1, 2, 3], vec![]]))
            .with(
                "weights",
                Column::ListF32(vec![vec![0.5, 0.25, 0.25], vec![]]),
            )
    }

    #[test]
    fn round_trip_all_column_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let t = sample();
        write_table(&path, &t).unwrap();
        assert_eq!(read_table(&path).unwrap(), t);
    }

    #[test]
    fn streaming_writer_appends_batches_and_empty_tables_exist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let mut w = TableWriter::create(&path).unwrap();
        w.write(&sample()).unwrap();
        w.write(&sample()).unwrap();
        assert!(!path.exists(), "not published before finish");
        w.finish(&sample()).unwrap();
        assert_eq!(read_table(&path).unwrap().n_rows(), 4);

        let empty_path = dir.path().join("e.parquet");
        let empty = Table::new().with("a", Column::F32(vec![]));
        TableWriter::create(&empty_path)
            .unwrap()
            .finish(&empty)
            .unwrap();
        assert_eq!(read_table(&empty_path).unwrap(), empty);
    }

    #[test]
    fn batches_stream_with_only_the_columns_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let mut w = TableWriter::create(&path).unwrap();
        w.write(&sample()).unwrap();
        w.write(&sample()).unwrap();
        w.finish(&sample()).unwrap();
        let mut rows = 0;
        for_each_batch(&path, &["x", "session"], |t| {
            assert_eq!(t.column("roi"), None);
            rows += t.strs(&path, "session")?.len();
            assert_eq!(t.f32s(&path, "x")?.len(), t.n_rows());
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, 4);
        let err = for_each_batch(&path, &["nope"], |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("missing column 'nope'"));
    }

    #[test]
    fn mismatched_columns_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::new()
            .with("a", Column::F32(vec![1.0]))
            .with("b", Column::F32(vec![]));
        assert!(write_table(dir.path().join("x.parquet"), &t).is_err());
        assert!(!dir.path().join("x.parquet").exists());
    }

    #[test]
    fn garbage_file_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        std::fs::write(&path, b"not parquet at all").unwrap();
        let err = read_table(&path).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("bad.parquet"));
    }
}
