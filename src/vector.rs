//! pgvector's `vector` as a return type, and read from query results. The pgvector crate serves
//! clients only, so the varlena is written and read here: 4-byte header, int16 dim, int16
//! unused, float4 values (pgvector's src/vector.h).

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::{pg_sys, FromDatum, IntoDatum};

use crate::errors;

pub struct Vector(pub Vec<f32>);

impl_sql_translatable!(Vector, "vector");

/// pgvector's limit (VECTOR_MAX_DIM).
const MAX_DIM: usize = 16000;

thread_local! {
    static VECTOR_OID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// The oid of pgvector's type, looked up in the vector extension's own schema (it need not
/// be on the search_path) and cached for the backend.
fn vector_oid() -> pg_sys::Oid {
    let cached = VECTOR_OID.with(|c| c.get());
    if cached != pg_sys::InvalidOid {
        return cached;
    }
    let oid = Spi::get_one::<pg_sys::Oid>(
        "SELECT t.oid FROM pg_catalog.pg_type t JOIN pg_catalog.pg_extension e \
         ON t.typnamespace = e.extnamespace WHERE e.extname = 'vector' AND t.typname = 'vector'",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        errors::report(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            "type vector of extension vector not found".into(),
            None,
            Some("CREATE EXTENSION vector (pg_clip needs pgvector 0.8 or newer).".into()),
        )
    });
    VECTOR_OID.with(|c| c.set(oid));
    oid
}

impl IntoDatum for Vector {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let dim = self.0.len();
        assert!(dim > 0 && dim <= MAX_DIM, "vector dimension {dim} out of range");
        let size = 8 + 4 * dim;
        // SAFETY: palloc'd buffer of exactly `size` bytes, written within bounds; f32 values
        // are copied bytewise since the varlena payload need not be 4-byte aligned for Rust.
        unsafe {
            let ptr = pg_sys::palloc0(size) as *mut u8;
            pgrx::set_varsize_4b(ptr as *mut pg_sys::varlena, size as i32);
            std::ptr::copy_nonoverlapping((dim as i16).to_ne_bytes().as_ptr(), ptr.add(4), 2);
            std::ptr::copy_nonoverlapping(self.0.as_ptr() as *const u8, ptr.add(8), 4 * dim);
            Some(pg_sys::Datum::from(ptr))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        vector_oid()
    }
}

impl FromDatum for Vector {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null datum of type vector is a varlena; detoasting gives a 4-byte-header
        // copy (or the original when it was plain), which holds at least 8 + 4 * dim bytes.
        unsafe {
            let raw = datum.cast_mut_ptr::<pg_sys::varlena>();
            let plain = pg_sys::pg_detoast_datum(raw);
            let p = plain as *const u8;
            let dim = i16::from_ne_bytes([*p.add(4), *p.add(5)]).max(0) as usize;
            let mut values = vec![0f32; dim];
            std::ptr::copy_nonoverlapping(p.add(8), values.as_mut_ptr() as *mut u8, 4 * dim);
            if plain != raw {
                pg_sys::pfree(plain.cast());
            }
            Some(Vector(values))
        }
    }
}

// SAFETY: the datum is a palloc'd varlena in the function's memory context, as Postgres expects.
unsafe impl pgrx::callconv::BoxRet for Vector {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a datum of this function's return type (vector), made just above.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}
