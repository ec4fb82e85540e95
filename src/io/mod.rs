//! Input and output: TIFF stacks (with ScanImage metadata), the experiment's CSV
//! files, Parquet tables, and atomic file publication. No module here knows any
//! pipeline stage.

pub mod atomic;
pub mod csv;
pub mod footprints;
pub mod ledger;
pub mod scanimage;
pub mod table;
pub mod tiff;
