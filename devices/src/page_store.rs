//! The B-tree's page store on a glommio DMA file (issue 2).
