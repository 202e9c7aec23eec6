use super::*;

fn argv(s: &[&str]) -> Vec<OsString> {
    s.iter().map(OsString::from).collect()
}

#[test]
fn sizes() {
    assert_eq!(size_mb("12g", Unit::Bytes), Some(12288.0));
    assert_eq!(size_mb("4G", Unit::Bytes), Some(4096.0));
    assert_eq!(size_mb("500M", Unit::Bytes), Some(500.0));
    assert_eq!(size_mb("768m", Unit::Bytes), Some(768.0));
    assert_eq!(size_mb("1073741824", Unit::Bytes), Some(1024.0));
    assert_eq!(size_mb("2.5G", Unit::Bytes), Some(2560.0));
    assert_eq!(size_mb("1024", Unit::Kib), Some(1.0));
    assert_eq!(size_mb("250", Unit::Gib), Some(256_000.0));
    assert_eq!(size_mb("$MEM", Unit::Bytes), None);
    assert_eq!(size_mb("80%", Unit::Kib), None);
}

#[test]
fn java_heaps() {
    let h = from_argv(&argv(&[
        "java",
        "-Xmx12g",
        "-jar",
        "gatk.jar",
        "HaplotypeCaller",
    ]));
    assert_eq!(h.memory_mb, 12288.0 + 1228.8);
    let h = from_argv(&argv(&[
        "gatk",
        "--java-options",
        "-Xmx8g -XX:+UseParallelGC",
        "MarkDuplicates",
    ]));
    assert_eq!(h.memory_mb, 8192.0 + 819.2);
    let h = from_shell(b"JAVA_OPTS=-Xmx2g picard SortSam I=a.bam O=b.bam\n");
    assert_eq!(h.memory_mb, 2048.0 + 256.0);
}

#[test]
fn samtools_sort_memory_is_per_thread() {
    let h = from_argv(&argv(&[
        "samtools", "sort", "-m", "4G", "-@", "4", "in.bam",
    ]));
    assert_eq!((h.memory_mb, h.threads), (16384.0, 4.0));
    let h = from_argv(&argv(&["samtools", "sort", "-m4G", "-@4", "in.bam"]));
    assert_eq!((h.memory_mb, h.threads), (16384.0, 4.0));
    // `-m` of another samtools subcommand is not a memory flag.
    let h = from_argv(&argv(&["samtools", "view", "-m", "4", "-@", "2", "in.bam"]));
    assert_eq!((h.memory_mb, h.threads), (0.0, 2.0));
}

#[test]
fn pipelines_add_up_and_commands_take_the_largest() {
    let script = b"#!/bin/bash\nset -euo pipefail\n\
        bwa mem -t 8 ref.fa r1.fq r2.fq \\\n  | samtools sort -m 2G -@ 4 -o out.bam -\n\
        STAR --runThreadN 6 --limitBAMsortRAM 3221225472 --genomeDir idx # sort in RAM\n\
        bowtie2 -p 2 -x idx -U r.fq > /dev/null\n";
    let h = from_shell(script);
    // bwa 8 + samtools 4 threads at once; samtools 4 × 2 GiB.
    assert_eq!(h.threads, 12.0);
    assert_eq!(h.memory_mb, 8192.0);
    assert!(
        h.sources.iter().any(|s| s == "star --limitbamsortram"),
        "{h:?}"
    );
    let star = from_shell(b"STAR --runThreadN 6 --limitBAMsortRAM 30000000000\n");
    assert!((star.memory_mb - 28610.2).abs() < 0.1, "{star:?}");
}

#[test]
fn generic_threads_wrappers_and_inline_shell() {
    let h = from_argv(&argv(&[
        "nice",
        "-n",
        "10",
        "kraken2",
        "--threads",
        "16",
        "x",
    ]));
    assert_eq!(h.threads, 16.0);
    let h = from_argv(&argv(&["sh", "-c", "samtools sort -m 1G -@ 2 a.bam | cat"]));
    assert_eq!(h.memory_mb, 2048.0);
    let h = from_argv(&argv(&["python3", "-c", "print('-Xmx99g')"]));
    assert_eq!(h.memory_mb, 0.0);
    // Quoted, commented and variable values are not read.
    let h = from_shell(b"echo '--threads 64'\n# samtools sort -m 9G\nsamtools sort -m $MEM x\n");
    assert_eq!((h.memory_mb, h.threads), (0.0, 0.0));
}
