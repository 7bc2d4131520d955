//! The stream id matches every shared test vector (the seed's `ComputeStreamID`).

use chatcore::stream_id::{is_well_formed, stream_id};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    a: String,
    b: String,
    stream_id: String,
}

#[test]
fn matches_every_vector_in_both_argument_orders() {
    let vectors: Vectors =
        serde_json::from_str(include_str!("data/stream_id_vectors.json")).expect("vectors file");
    assert!(vectors.vectors.len() >= 10, "the vector file was read");
    for vector in &vectors.vectors {
        assert_eq!(
            stream_id(&vector.a, &vector.b),
            vector.stream_id,
            "{}/{}",
            vector.a,
            vector.b
        );
        assert_eq!(
            stream_id(&vector.b, &vector.a),
            vector.stream_id,
            "{}/{}",
            vector.b,
            vector.a
        );
        assert!(is_well_formed(&vector.stream_id));
    }
}
