//! `chatcore::stream_id::stream_id` for short ids and for ids of the maximum length (256 bytes).

use std::hint::black_box;
use std::time::Duration;

use chatcore::model::MAX_ID_BYTES;
use chatcore::stream_id::{is_well_formed, stream_id};
use criterion::{criterion_group, criterion_main, Criterion};

fn bench_stream_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_id");

    let (a, b) = ("user123", "user456");
    assert_eq!(stream_id(a, b), "7b28e95659ec2171");
    group.bench_function("short", |bench| {
        bench.iter(|| stream_id(black_box(a), black_box(b)))
    });

    let long_a = format!("{:a<width$}", "user123-", width = MAX_ID_BYTES);
    let long_b = format!("{:b<width$}", "user456-", width = MAX_ID_BYTES);
    assert_eq!((long_a.len(), long_b.len()), (256, 256));
    assert!(is_well_formed(&stream_id(&long_a, &long_b)));
    group.bench_function("256B", |bench| {
        bench.iter(|| stream_id(black_box(&long_a), black_box(&long_b)))
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_stream_id
}
criterion_main!(benches);
