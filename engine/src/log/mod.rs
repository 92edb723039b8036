//! The durable log: preallocated, mmap'd segment files of CRC-chained records, made durable by
//! io_uring fdatasync with group commit. (Being built: see issue 2.)
