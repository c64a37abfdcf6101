//! In-process tests (`cargo pgrx test`): the SQL functions called inside a real backend.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup() {
        Spi::run("CREATE EXTENSION IF NOT EXISTS pg_clip CASCADE").unwrap();
        Spi::run("SELECT clip.register_model('tiny', 'tiny-clip')").unwrap();
        Spi::run("SET pg_clip.model = 'tiny'").unwrap();
    }

    #[pg_test]
    fn text_embeddings_are_unit_vectors_of_the_model_dimension() {
        setup();
        let dims = Spi::get_one::<i32>("SELECT vector_dims(clip.embed_text('a photo of a cat'))").unwrap();
        assert_eq!(dims, Some(64));
        let norm =
            Spi::get_one::<f64>("SELECT vector_norm(clip.embed_text('a photo of a cat'))").unwrap().unwrap();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }

    #[pg_test]
    fn batch_and_single_text_embeddings_agree() {
        setup();
        let d = Spi::get_one::<f64>(
            "SELECT (clip.embed_texts(ARRAY['a cat', NULL, 'a dog']))[3] <=> clip.embed_text('a dog')",
        )
        .unwrap()
        .unwrap();
        assert!(d < 1e-5, "cosine distance {d}");
        let null =
            Spi::get_one::<bool>("SELECT (clip.embed_texts(ARRAY['a cat', NULL]))[2] IS NULL").unwrap();
        assert_eq!(null, Some(true));
    }

    #[pg_test]
    fn null_in_null_out() {
        setup();
        assert_eq!(Spi::get_one::<bool>("SELECT clip.embed_image(NULL) IS NULL").unwrap(), Some(true));
        assert_eq!(Spi::get_one::<bool>("SELECT clip.embed_text(NULL) IS NULL").unwrap(), Some(true));
        assert_eq!(Spi::get_one::<bool>("SELECT clip.embed_images(NULL) IS NULL").unwrap(), Some(true));
    }

    #[pg_test]
    fn registration_records_dimension_and_stamp() {
        setup();
        let (dim, stamp) =
            Spi::get_two::<i32, String>("SELECT embed_dim, stamp FROM clip.model WHERE name = 'tiny'")
                .unwrap();
        assert_eq!(dim, Some(64));
        assert_eq!(stamp.map(|s| s.len()), Some(64));
    }

    #[pg_test(error = "model \"nope\" is not registered")]
    fn unknown_model_is_an_error() {
        setup();
        Spi::run("SELECT clip.embed_text('x', 'nope')").unwrap();
    }

    #[pg_test(error = "array element 2 of 2: image is empty (0 bytes)")]
    fn bad_array_element_is_named() {
        setup();
        Spi::run("SELECT clip.embed_images(ARRAY[NULL, ''::bytea])").unwrap();
    }

    #[pg_test]
    fn file_names_become_labels_with_the_configured_variants() {
        setup();
        let (label, variant) = Spi::get_two::<String, String>(
            "SELECT * FROM clip.label_from_filename('x/LOB-EN001_dark_magician_UR.jpg')",
        )
        .unwrap();
        assert_eq!((label.as_deref(), variant.as_deref()), (Some("Dark Magician"), Some("ur")));
        Spi::run("SET pg_clip.identify_variants = 'mk2'").unwrap();
        let (label, variant) =
            Spi::get_two::<String, String>("SELECT * FROM clip.label_from_filename('gear_mk2.png')").unwrap();
        assert_eq!((label.as_deref(), variant.as_deref()), (Some("Gear"), Some("mk2")));
    }

    #[pg_test]
    fn blend_weights_the_classifier_by_its_certainty() {
        setup();
        let (p, w) = Spi::get_two::<Vec<f32>, f32>(
            "SELECT * FROM clip._blend(ARRAY[0.4, 0.6]::real[], ARRAY[0.9, 0.1]::real[], NULL)",
        )
        .unwrap();
        let (p, w) = (p.unwrap(), w.unwrap());
        assert!((w - 0.2).abs() < 1e-6, "{w}");
        assert!((p[0] - (0.2 * 0.4 + 0.8 * 0.9)).abs() < 1e-6 && p[0] > p[1], "{p:?}");
    }

    #[pg_test(error = "unknown option \"bogus\"")]
    fn unknown_kmeans_option_is_an_error() {
        setup();
        Spi::run("SELECT * FROM clip._kmeans('c', 'tiny', 2, '{\"bogus\": 1}')").unwrap();
    }
}
