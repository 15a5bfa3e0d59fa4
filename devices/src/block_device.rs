//! The WAL's block device on glommio DMA files (issue 3).
