//! Identifiers shared by every layer: terms, log indexes and node ids.
//!
//! Each is a newtype over `u64` so that a term can never be passed where an index is expected.
//! Index 0 and term 0 mean "nothing": the first entry of a log has index 1, and a log that holds
//! nothing has last index 0 and last term 0.

use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The zero value ("none yet").
            pub const ZERO: $name = $name(0);

            /// The raw number.
            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<u64> for $name {
            #[inline]
            fn from(value: u64) -> Self {
                $name(value)
            }
        }
    };
}

id_newtype!(
    /// A Raft term: a period with at most one leader. Only ever grows on a node.
    Term,
    "t"
);
id_newtype!(
    /// The position of an entry in the replicated log, starting at 1.
    LogIndex,
    "i"
);
id_newtype!(
    /// The identity of a replica within a cluster. 0 is reserved for "no node".
    NodeId,
    "n"
);

impl LogIndex {
    /// The next index.
    #[inline]
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The previous index; `LogIndex::ZERO` stays zero.
    #[inline]
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// `self + count`.
    #[inline]
    pub const fn plus(self, count: u64) -> LogIndex {
        LogIndex(self.0 + count)
    }
}

impl Term {
    /// The next term.
    #[inline]
    pub const fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_kind() {
        assert_eq!(Term(3).to_string(), "t3");
        assert_eq!(LogIndex(7).to_string(), "i7");
        assert_eq!(NodeId(2).to_string(), "n2");
    }

    #[test]
    fn index_arithmetic() {
        assert_eq!(LogIndex(5).next(), LogIndex(6));
        assert_eq!(LogIndex(0).prev(), LogIndex(0));
        assert_eq!(LogIndex(5).plus(3), LogIndex(8));
    }
}
