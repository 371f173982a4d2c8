//! The knowledge base: `knowledge.toml`, compiled into the binary and read
//! once. Plain rows with their sources; the rules live in `rules.rs`.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::version::Dotted;

/// One table of knowledge.toml, turned into JSON by build.rs.
macro_rules! table {
    ($name:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/knowledge-", $name, ".json"))
    };
}

/// The knowledge base. Each table is parsed on first use: `detect` reads
/// only the GPU and branch tables.
#[derive(Default)]
pub struct Knowledge {
    meta: OnceLock<Meta>,
    sources: OnceLock<Vec<Source>>,
    minor_compat: OnceLock<Vec<MinorCompat>>,
    toolkits: OnceLock<Vec<ToolkitRow>>,
    branches: OnceLock<Vec<BranchRow>>,
    forward_compat: OnceLock<Vec<ForwardCompat>>,
    architectures: OnceLock<Vec<ArchRow>>,
    gpus: OnceLock<Vec<GpuRow>>,
    pytorch_wheels: OnceLock<Vec<WheelRow>>,
    pytorch_arches: OnceLock<Vec<WheelArchRow>>,
    pytorch_releases: OnceLock<Vec<TorchRelease>>,
}

fn parse<T: serde::de::DeserializeOwned>(name: &str, json: &str) -> T {
    serde_json::from_str(json)
        .unwrap_or_else(|error| panic!("knowledge.toml [{name}] is invalid: {error}"))
}

impl Knowledge {
    pub fn meta(&self) -> &Meta {
        self.meta.get_or_init(|| parse("meta", table!("meta")))
    }
    pub fn sources(&self) -> &[Source] {
        self.sources
            .get_or_init(|| parse("source", table!("source")))
    }
    pub fn minor_compat(&self) -> &[MinorCompat] {
        self.minor_compat
            .get_or_init(|| parse("minor_compat", table!("minor_compat")))
    }
    pub fn toolkits(&self) -> &[ToolkitRow] {
        self.toolkits
            .get_or_init(|| parse("toolkit", table!("toolkit")))
    }
    pub fn branches(&self) -> &[BranchRow] {
        self.branches
            .get_or_init(|| parse("branch", table!("branch")))
    }
    pub fn forward_compat(&self) -> &[ForwardCompat] {
        self.forward_compat
            .get_or_init(|| parse("forward_compat", table!("forward_compat")))
    }
    pub fn architectures(&self) -> &[ArchRow] {
        self.architectures
            .get_or_init(|| parse("arch", table!("arch")))
    }
    pub fn gpus(&self) -> &[GpuRow] {
        self.gpus.get_or_init(|| parse("gpu", table!("gpu")))
    }
    pub fn pytorch_wheels(&self) -> &[WheelRow] {
        self.pytorch_wheels
            .get_or_init(|| parse("pytorch_wheel", table!("pytorch_wheel")))
    }
    pub fn pytorch_releases(&self) -> &[TorchRelease] {
        self.pytorch_releases
            .get_or_init(|| parse("pytorch_release", table!("pytorch_release")))
    }
    pub fn pytorch_arches(&self) -> &[WheelArchRow] {
        self.pytorch_arches
            .get_or_init(|| parse("pytorch_arch", table!("pytorch_arch")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub schema: u32,
    pub compiled: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub id: String,
    pub title: String,
    pub location: Option<String>,
    pub via: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MinorCompat {
    pub cuda_major: u32,
    pub supported: bool,
    pub min_driver: Option<Dotted>,
    pub min_driver_documented: Option<Dotted>,
    /// Drivers from this branch on run the major natively (not by MVC).
    pub below_branch: Option<u32>,
    pub sources: Vec<String>,
    pub confidence: String,
    pub notes: Option<String>,
    pub conflict: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolkitRow {
    /// "12.8.1" (Update 1), "12.8.0" (GA); before CUDA 11 the full
    /// version ("10.2.89"); "13.4.0-dp" for a developer preview.
    pub release: String,
    pub label: String,
    /// Table 3 native floor (Linux x86_64).
    pub min_driver: Dotted,
    /// Driver bundled in the runfile, where known (differs from Table 3 in places).
    pub runfile_driver: Option<Dotted>,
    pub sources: Vec<String>,
    pub confidence: String,
    pub notes: Option<String>,
}

impl BranchRow {
    /// Whether the branch's support ended before `date` ("2026-11-22"): by
    /// its end-of-life date, else by the year its end-of-life text names
    /// ("November 2020").
    pub fn ended_before(&self, date: &str) -> bool {
        if let Some(eol) = &self.end_of_life_date {
            return eol.as_str() < date;
        }
        let year: Option<u32> = date.get(..4).and_then(|y| y.parse().ok());
        self.end_of_life.as_deref().is_some_and(|text| {
            text.split_whitespace()
                .filter_map(|w| w.parse::<u32>().ok())
                .any(|y| y > 1990 && year.is_some_and(|now| y < now))
        })
    }
}

impl ToolkitRow {
    /// (major, minor, update index) of the release; the 10.x-era full
    /// versions count as their minor's only release (update 0).
    pub fn key(&self) -> Option<(u32, u32, u32)> {
        let numeric = self.release.split('-').next()?;
        let version = Dotted::parse(numeric)?;
        let parts = version.components();
        let update = match parts.get(2).copied() {
            Some(update) if update < 20 => update,
            _ => 0,
        };
        Some((version.major(), version.minor(), update))
    }

    pub fn is_preview(&self) -> bool {
        self.release.contains('-')
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BranchRow {
    pub branch: u32,
    #[serde(rename = "type")]
    pub kind: String,
    /// The newest CUDA the branch's libcuda supports: what nvidia-smi prints.
    pub max_cuda: Option<String>,
    pub released: Option<String>,
    pub end_of_life: Option<String>,
    pub end_of_life_date: Option<String>,
    /// The newest release of the branch seen in a real capture, where it
    /// is newer than every release a toolkit row cites.
    pub newest_seen: Option<Dotted>,
    pub sources: Vec<String>,
    pub confidence: String,
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardCompat {
    pub package: String,
    pub cuda: String,
    pub built_from_branch: u32,
    pub supported_branches: Vec<u32>,
    pub native_branches: Vec<u32>,
    pub unsupported_branches: Vec<u32>,
    #[serde(default)]
    pub elf_note_branches: Vec<u32>,
    #[serde(default)]
    pub container_branches: Vec<u32>,
    pub sources: Vec<String>,
    pub confidence: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchRow {
    pub name: String,
    pub compute_capabilities: Vec<String>,
    pub last_cuda_major: Option<u32>,
    pub last_driver_branch: Option<u32>,
    /// "required" | "supported" | "unsupported"
    pub open_module: String,
    pub first_cuda: String,
    pub min_driver_note: Option<String>,
    pub sources: Vec<String>,
    pub confidence: String,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRow {
    pub device: String,
    #[serde(default)]
    pub subsystems: Vec<String>,
    pub name: String,
    pub chip: String,
    pub arch: String,
    pub compute_capability: String,
    /// "datacenter" | "geforce" | "titan" | "workstation"
    pub class: String,
    /// "yes" | "no" | "conditional" | "unclear"
    pub forward_compat: String,
    pub forward_compat_note: Option<String>,
    pub min_driver_branch: Option<u32>,
    /// First driver whose open-module README lists the device (a lower-bound proxy).
    pub first_listed_driver: Option<String>,
    pub last_driver_branch: Option<u32>,
    pub last_cuda_major: Option<u32>,
    /// "required" | "supported" | "unsupported"
    pub open_module: String,
    pub sources: Vec<String>,
    pub confidence: String,
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WheelRow {
    pub variant: String,
    pub cuda: String,
    pub torch: Vec<String>,
    pub sources: Vec<String>,
    pub confidence: String,
    pub notes: Option<String>,
}

/// A torch release (minor), its newest patch and the domain libraries
/// built with it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TorchRelease {
    pub torch: String,
    pub newest: String,
    pub torchvision: String,
    pub torchaudio: String,
    pub sources: Vec<String>,
    pub confidence: String,
}

/// Architectures a wheel variant carries kernels for, from a torch release on.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WheelArchRow {
    pub variants: Vec<String>,
    pub torch_from: String,
    pub min_compute_capability: Option<String>,
    pub max_compute_capability: Option<String>,
    pub sources: Vec<String>,
    pub notes: Option<String>,
}

/// The words of a GPU name, lower case, without the vendor's name.
pub fn name_words(name: &str) -> Vec<String> {
    name.to_lowercase()
        .split(|c: char| c.is_whitespace() || matches!(c, '-' | '(' | ')' | '/' | ','))
        .filter(|w| !w.is_empty() && *w != "nvidia")
        .map(str::to_string)
        .collect()
}

impl Knowledge {
    /// The compiled-in knowledge base.
    pub fn get() -> &'static Knowledge {
        static KNOWLEDGE: OnceLock<Knowledge> = OnceLock::new();
        KNOWLEDGE.get_or_init(Knowledge::default)
    }

    /// The row for a PCI device id (and subsystem `vendor:device` when
    /// known): a row listing the subsystem wins; otherwise the first row.
    /// When several rows share the id and none lists the subsystem, the
    /// second value is the other candidates' names.
    pub fn gpu(&self, device: u16, subsystem: Option<&str>) -> Option<(&GpuRow, Vec<&str>)> {
        let rows: Vec<&GpuRow> = self
            .gpus()
            .iter()
            .filter(|row| parse_hex16(&row.device) == Some(device))
            .collect();
        if let Some(subsystem) = subsystem
            && let Some(row) = rows.iter().find(|row| {
                row.subsystems
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(subsystem))
            })
        {
            return Some((row, Vec::new()));
        }
        let first = *rows.first()?;
        let others = rows[1..].iter().map(|row| row.name.as_str()).collect();
        Some((first, others))
    }

    /// A GPU by name, as a person types it ("H100 SXM5", "rtx 4090") or
    /// nvidia-smi prints it ("NVIDIA GeForce RTX 4090"): every word of the
    /// query is a word of the name, in any case; "NVIDIA" is no word.
    pub fn gpu_by_name(&self, query: &str) -> Vec<&GpuRow> {
        let words = name_words(query);
        self.gpus()
            .iter()
            .filter(|row| {
                let tokens = name_words(&row.name);
                !words.is_empty() && words.iter().all(|w| tokens.contains(w))
            })
            .collect()
    }

    pub fn branch(&self, branch: u32) -> Option<&BranchRow> {
        self.branches().iter().find(|row| row.branch == branch)
    }

    pub fn arch_of(&self, compute_capability: &str) -> Option<&ArchRow> {
        self.architectures().iter().find(|row| {
            row.compute_capabilities
                .iter()
                .any(|cc| cc == compute_capability)
        })
    }

    pub fn source(&self, id: &str) -> Option<&Source> {
        self.sources().iter().find(|source| source.id == id)
    }
}

pub fn parse_hex16(text: &str) -> Option<u16> {
    let digits = text
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X");
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_end_by_date_or_by_the_year_their_text_names() {
        let kb = Knowledge::get();
        let on = |branch| kb.branch(branch).unwrap().ended_before("2026-11-22");
        assert!(on(535), "end_of_life_date 2026-06-01");
        assert!(!on(580), "end_of_life_date 2028-08-04");
        assert!(on(440), "end_of_life \"November 2020\", no date");
        assert!(!on(455), "\"Not Applicable\"");
    }

    #[test]
    fn every_row_cites_known_sources() {
        let kb = Knowledge::get();
        let mut cited: Vec<(&str, &Vec<String>)> = Vec::new();
        cited.extend(
            kb.toolkits()
                .iter()
                .map(|r| (r.release.as_str(), &r.sources)),
        );
        cited.extend(kb.gpus().iter().map(|r| (r.name.as_str(), &r.sources)));
        cited.extend(
            kb.forward_compat()
                .iter()
                .map(|r| (r.package.as_str(), &r.sources)),
        );
        cited.extend(
            kb.pytorch_wheels()
                .iter()
                .map(|r| (r.variant.as_str(), &r.sources)),
        );
        cited.extend(
            kb.pytorch_releases()
                .iter()
                .map(|r| (r.torch.as_str(), &r.sources)),
        );
        cited.extend(
            kb.pytorch_arches()
                .iter()
                .map(|r| (r.torch_from.as_str(), &r.sources)),
        );
        cited.extend(
            kb.minor_compat()
                .iter()
                .map(|r| ("minor_compat", &r.sources)),
        );
        cited.extend(kb.branches().iter().map(|r| ("branch", &r.sources)));
        cited.extend(
            kb.architectures()
                .iter()
                .map(|r| (r.name.as_str(), &r.sources)),
        );
        for (row, sources) in cited {
            assert!(!sources.is_empty(), "{row} cites no source");
            for id in sources {
                assert!(kb.source(id).is_some(), "{row} cites unknown source {id}");
            }
        }
    }

    #[test]
    fn gpu_lookup_uses_the_subsystem_to_split_shared_ids() {
        let kb = Knowledge::get();
        assert_eq!(
            kb.gpu(0x2335, Some("10de:18bf")).unwrap().0.name,
            "NVIDIA H200"
        );
        assert_eq!(
            kb.gpu(0x25b6, Some("10de:157e")).unwrap().0.name,
            "NVIDIA A2"
        );
        let (row, others) = kb.gpu(0x25b6, None).unwrap();
        assert_eq!(
            (row.name.as_str(), others),
            ("NVIDIA A16", vec!["NVIDIA A2"])
        );
        assert!(kb.gpu(0xffff, None).is_none());
    }

    #[test]
    fn gpu_names_as_people_type_them() {
        let kb = Knowledge::get();
        let found = kb.gpu_by_name("H100 SXM5");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].device, "0x2330");
        assert_eq!(kb.gpu_by_name("RTX 4090")[0].device, "0x2684");
    }
}
