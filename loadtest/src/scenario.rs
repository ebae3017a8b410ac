//! Scenario files: the shape of a run, its request mix, the data it needs, and its targets.
//!
//! Parsed strictly (unknown keys are errors), then checked for values that parse but make no sense;
//! every error names the file and the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use fwb_reports::{Class, Targets};
use serde::{Deserialize, Serialize};

use crate::pacing::Shape;

/// One load profile, as in `scenarios/*.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name used in run folders (`peak`, `smoke`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Concurrent users (goose users), each keeping its own schedule.
    pub users: usize,
    /// Requests per second all users together aim for in the steady state.
    pub rate: f64,
    /// Seconds over which users start, evenly.
    pub ramp_up_s: u64,
    /// Seconds at full rate before measuring: caches fill, connections open.
    pub warm_up_s: u64,
    /// Seconds measured.
    pub steady_s: u64,
    /// A request taking longer fails as timed out.
    #[serde(default = "default_timeout_s")]
    pub request_timeout_s: u64,
    /// A sudden jump in rate during the steady state, and back.
    #[serde(default)]
    pub spike: Option<Spike>,
    /// Requests by name: how often each is picked (relative weights) and its latency class.
    pub mix: BTreeMap<RequestKind, MixEntry>,
    /// Sizes of the files uploaded during the run.
    pub uploads: SizeMix,
    /// The data set the run reads, created through the API before the run (and reused by later runs).
    pub seed: Seed,
    pub targets: Targets,
}

fn default_timeout_s() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spike {
    /// Seconds into the steady state the spike starts.
    pub at_s: u64,
    pub duration_s: u64,
    /// The rate during the spike over the base rate.
    pub factor: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixEntry {
    pub weight: f64,
    /// The latency class the request's figures count in; the request's natural class when absent.
    #[serde(default)]
    pub class: Option<Class>,
}

/// The requests a user can make; each is one HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// The first page of the account's files.
    ListFiles,
    /// The page after the one this user saw last (the first page when it has seen none).
    ListNextPage,
    /// Metadata of a seeded file, by popularity.
    GetMetadata,
    /// Substring search over names.
    Search,
    /// A whole seeded file, by popularity; length and hash checked.
    Download,
    /// A byte range of a seeded file, by popularity; bytes checked.
    DownloadRange,
    /// A conditional GET with the file's ETag: must be 304.
    Revalidate,
    /// The small thumbnail of a seeded image.
    Thumbnail,
    /// A multipart upload of a size from the upload mix; size and hash checked.
    Upload,
    /// Renames a file the account uploaded during the run.
    Rename,
    /// Deletes a file the account uploaded during the run.
    Delete,
}

impl RequestKind {
    pub const ALL: [RequestKind; 11] = [
        RequestKind::ListFiles,
        RequestKind::ListNextPage,
        RequestKind::GetMetadata,
        RequestKind::Search,
        RequestKind::Download,
        RequestKind::DownloadRange,
        RequestKind::Revalidate,
        RequestKind::Thumbnail,
        RequestKind::Upload,
        RequestKind::Rename,
        RequestKind::Delete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RequestKind::ListFiles => "list_files",
            RequestKind::ListNextPage => "list_next_page",
            RequestKind::GetMetadata => "get_metadata",
            RequestKind::Search => "search",
            RequestKind::Download => "download",
            RequestKind::DownloadRange => "download_range",
            RequestKind::Revalidate => "revalidate",
            RequestKind::Thumbnail => "thumbnail",
            RequestKind::Upload => "upload",
            RequestKind::Rename => "rename",
            RequestKind::Delete => "delete",
        }
    }

    pub fn natural_class(self) -> Class {
        match self {
            RequestKind::Download | RequestKind::DownloadRange | RequestKind::Revalidate | RequestKind::Thumbnail => {
                Class::Download
            }
            RequestKind::Upload => Class::Upload,
            _ => Class::Api,
        }
    }
}

/// Sizes by weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeMix {
    pub sizes: Vec<SizeWeight>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeWeight {
    /// `"64 KiB"`, `"1 MiB"`, or a number of bytes; written back as a number of bytes, since a unit rounds
    /// (`"2.56 KiB"` printed back as `"2.6 KiB"` was another size: found by fuzzing).
    #[serde(serialize_with = "bytes_as_number")]
    pub size: ByteSize,
    pub weight: f64,
}

fn bytes_as_number<S: serde::Serializer>(size: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(size.as_u64())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Users the data is spread over; load users take their keys in turn, so more accounts spread per-key rate limits.
    pub accounts: usize,
    /// Public files read by every user.
    pub files: usize,
    /// Of those, the share that are PNG images (with thumbnails); the rest are random bytes of the size mix.
    pub image_fraction: f64,
    /// Zipf exponent of file popularity: 0 reads all files alike, 1 and more concentrate reads on a few.
    pub zipf_exponent: f64,
    pub sizes: Vec<SizeWeight>,
}

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates; the error names the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a scenario is representable in TOML")
    }

    fn validate(&self) -> Result<(), String> {
        fn fraction(key: &str, value: f64) -> Result<(), String> {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(format!("{key} must be between 0 and 1, not {value}"))
            }
        }
        fn positive(key: &str, value: f64) -> Result<(), String> {
            if value.is_finite() && value > 0.0 { Ok(()) } else { Err(format!("{key} must be above 0, not {value}")) }
        }
        fn sizes(key: &str, sizes: &[SizeWeight]) -> Result<(), String> {
            if sizes.is_empty() {
                return Err(format!("{key} must name at least one size"));
            }
            for (i, s) in sizes.iter().enumerate() {
                if s.size.as_u64() == 0 {
                    return Err(format!("{key}[{i}].size must be above 0 bytes"));
                }
                positive(&format!("{key}[{i}].weight"), s.weight)?;
            }
            Ok(())
        }
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("name must be letters, digits, '-' or '_', not {:?}", self.name));
        }
        if self.users == 0 {
            return Err("users must be at least 1".into());
        }
        positive("rate", self.rate)?;
        if self.steady_s == 0 {
            return Err("steady_s must be at least 1".into());
        }
        if self.request_timeout_s == 0 {
            return Err("request_timeout_s must be at least 1".into());
        }
        if let Some(spike) = &self.spike {
            positive("spike.factor", spike.factor)?;
            if spike.at_s + spike.duration_s > self.steady_s {
                return Err(format!(
                    "spike.at_s + spike.duration_s ({}) must lie within steady_s ({})",
                    spike.at_s + spike.duration_s,
                    self.steady_s
                ));
            }
        }
        if self.mix.is_empty() {
            return Err("mix must name at least one request".into());
        }
        for (kind, entry) in &self.mix {
            if !(entry.weight.is_finite() && entry.weight >= 0.0) {
                return Err(format!("mix.{}.weight must be 0 or more, not {}", kind.name(), entry.weight));
            }
        }
        if self.mix.values().all(|e| e.weight == 0.0) {
            return Err("mix: at least one weight must be above 0".into());
        }
        sizes("uploads.sizes", &self.uploads.sizes)?;
        if self.seed.accounts == 0 {
            return Err("seed.accounts must be at least 1".into());
        }
        if self.seed.files == 0 {
            return Err("seed.files must be at least 1".into());
        }
        fraction("seed.image_fraction", self.seed.image_fraction)?;
        if !(self.seed.zipf_exponent.is_finite() && self.seed.zipf_exponent >= 0.0) {
            return Err(format!("seed.zipf_exponent must be 0 or more, not {}", self.seed.zipf_exponent));
        }
        sizes("seed.sizes", &self.seed.sizes)?;
        let t = &self.targets;
        for (class, p95) in &t.p95_ms {
            positive(&format!("targets.p95_ms.{class}"), *p95)?;
        }
        fraction("targets.max_error_rate", t.max_error_rate)?;
        fraction("targets.min_achieved_rate", t.min_achieved_rate)?;
        for (key, value) in [
            ("targets.min_cache_hit_ratio", t.min_cache_hit_ratio),
            ("targets.max_service_cpu", t.max_service_cpu),
            ("targets.max_service_memory", t.max_service_memory),
        ] {
            if let Some(value) = value {
                fraction(key, value)?;
            }
        }
        Ok(())
    }

    pub fn class_of(&self, kind: RequestKind) -> Class {
        self.mix.get(&kind).and_then(|e| e.class).unwrap_or(kind.natural_class())
    }

    /// When the run does what: the form the engine runs.
    pub fn shape(&self) -> Shape {
        Shape {
            users: self.users,
            rate: self.rate,
            spike: self.spike,
            ramp_up: Duration::from_secs(self.ramp_up_s),
            warm_up: Duration::from_secs(self.warm_up_s),
            steady: Duration::from_secs(self.steady_s),
            timeout: Duration::from_secs(self.request_timeout_s),
        }
    }

    /// The mean target rate over the steady state, spike included.
    pub fn mean_steady_rate(&self) -> f64 {
        match self.spike {
            Some(spike) => {
                let spiked = spike.duration_s as f64;
                self.rate * (self.steady_s as f64 - spiked + spiked * spike.factor) / self.steady_s as f64
            }
            None => self.rate,
        }
    }
}

/// The fuzz target's door (`loadtest/fuzz`): whatever the text, parsing answers without panicking, and a
/// scenario it accepts prints as TOML that parses back to the same scenario. Not an API.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(scenario) = Scenario::parse(text) {
        assert_eq!(Scenario::parse(&scenario.to_toml()).as_ref(), Ok(&scenario), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What fuzzing found interesting (`loadtest/fuzz/corpus/scenario/`) replays here, without a fuzzer.
    #[test]
    fn the_fuzz_corpus_replays_clean() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/scenario");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            fuzz(&std::fs::read(entry.unwrap().path()).unwrap());
            replayed += 1;
        }
        assert!(replayed >= 8, "only {replayed} corpus entries: the corpus is missing");
    }

    fn shipped(name: &str) -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(format!("{name}.toml"));
        Scenario::load(&path).unwrap()
    }

    #[test]
    fn the_shipped_scenarios_load_and_round_trip() {
        for name in ["smoke", "peak", "soak", "spike"] {
            let scenario = shipped(name);
            assert_eq!(scenario.name, name);
            let again = Scenario::parse(&scenario.to_toml()).unwrap();
            assert_eq!(again, scenario, "{name} changed on its way through TOML");
        }
    }

    #[test]
    fn peak_holds_the_seed_numbers() {
        let peak = shipped("peak");
        assert_eq!((peak.users, peak.rate), (1000, 1000.0));
        assert!(peak.steady_s >= 120);
        let total: f64 = peak.mix.values().map(|e| e.weight).sum();
        let uploads_per_minute = peak.mix[&RequestKind::Upload].weight / total * peak.rate * 60.0;
        assert!((uploads_per_minute - 100.0).abs() < 1.0, "{uploads_per_minute} uploads a minute");
        let t = &peak.targets;
        assert_eq!(t.p95_ms[&Class::Upload], 5000.0);
        assert_eq!(t.p95_ms[&Class::Download], 1000.0);
        assert_eq!(t.p95_ms[&Class::Api], 100.0);
        assert_eq!(t.max_error_rate, 0.001);
        assert_eq!(t.min_cache_hit_ratio, Some(0.8));
        assert_eq!((t.max_service_cpu, t.max_service_memory), (Some(0.8), Some(0.8)));
    }

    #[test]
    fn spike_multiplies_the_rate_inside_its_window_only() {
        let spike = shipped("spike");
        let s = spike.spike.unwrap();
        assert_eq!(s.factor, 5.0);
        let shape = spike.shape();
        let inside = Duration::from_secs(s.at_s);
        assert_eq!(shape.rate_at(Some(inside)), spike.rate * 5.0);
        assert_eq!(shape.rate_at(Some(Duration::from_secs(s.at_s + s.duration_s))), spike.rate);
        assert_eq!(shape.rate_at(None), spike.rate);
    }

    #[test]
    fn errors_name_the_key() {
        let good = shipped("smoke").to_toml();
        let cases = [
            (good.replace("users = ", "userz = "), "userz"),
            (good.replace("max_error_rate = 0.001", "max_error_rate = 2.0"), "targets.max_error_rate"),
            (good.replace("zipf_exponent = ", "zipf_exponent = -"), "seed.zipf_exponent"),
            (good.replacen("weight = ", "weight = -", 1), "weight"),
            (good.replace("steady_s = ", "steady_s = \"long\" #"), "steady_s"),
            (good.replace("[mix.get_metadata]", "[mix.get_metadataa]"), "get_metadataa"),
            (good.replace("class = \"api\"", "class = \"fast\""), "fast"),
        ];
        for (text, key) in cases {
            assert_ne!(text, good, "the case for {key} changed nothing");
            let error = Scenario::parse(&text).unwrap_err();
            assert!(error.contains(key), "error for {key} does not name it: {error}");
        }
    }
}
