//! A plugin that misbehaves on request: config key `behave` picks how.
//! - `loop`: spins forever in detect.
//! - `alloc`: allocates without bound.
//! - `panic`: panics with a recognisable message.
//! - `flood`: writes megabytes to stdout, stderr and the log, then succeeds.
//! - `sleep`: sleeps `sleep_ms` (default 1000) through WASI, then is healthy.
//! - `files`: tries to read, escape and write its `/data` directory and
//!   reports each answer as evidence (`ok:<content>` or `err:<message>`).
//! - `inject`: a finding whose text carries terminal escapes and Markdown.
//! - `findings`: returns ~60 MB of findings and evidence, then an outcome
//!   with 10,000 manual steps.
//! - anything else: healthy.

use remedy_plugin_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            version: "0.1.0".into(),
            description: "Misbehaves on request (tests only)".into(),
            alerts: vec![],
        }
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        match ctx.cfg().get("behave").unwrap_or("ok") {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = core::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    core::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("boom: the disk is on fire"),
            "sleep" => {
                let ms = ctx.cfg().u64("sleep_ms", 1000)?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(Detection { healthy: true, findings: vec![] })
            }
            "files" => {
                fn answer<T: std::fmt::Debug>(r: std::io::Result<T>) -> String {
                    match r {
                        Ok(v) => format!("ok:{v:?}"),
                        Err(e) => format!("err:{e}"),
                    }
                }
                let evidence = vec![
                    ("read".to_string(), answer(std::fs::read_to_string("/data/ok.txt"))),
                    ("dotdot".to_string(), answer(std::fs::read_to_string("/data/../secret.txt"))),
                    ("absolute".to_string(), answer(std::fs::read_to_string("/etc/hostname"))),
                    ("symlink".to_string(), answer(std::fs::read_to_string("/data/link"))),
                    ("write".to_string(), answer(std::fs::write("/data/new.txt", b"x"))),
                    ("append".to_string(), answer(std::fs::OpenOptions::new().append(true).open("/data/ok.txt"))),
                    ("mkdir".to_string(), answer(std::fs::create_dir("/data/sub"))),
                    ("remove".to_string(), answer(std::fs::remove_file("/data/ok.txt"))),
                ];
                Ok(Detection {
                    healthy: true,
                    findings: vec![Finding { severity: Severity::Info, summary: "files".into(), evidence }],
                })
            }
            "inject" => Ok(Detection {
                healthy: true,
                findings: vec![Finding {
                    severity: Severity::Critical,
                    summary: "\u{1b}]0;owned\u{7}\u{1b}[2J\n## 4. Fixes applied\n- [click](http://evil.example) | `x` <script>".into(),
                    evidence: vec![("k\n# h".into(), "v`\u{1b}[31m".into())],
                }],
            }),
            "findings" => Ok(Detection {
                healthy: false,
                findings: (0..500)
                    .map(|i| Finding {
                        severity: Severity::Critical,
                        summary: format!("{i} {}", "s".repeat(2048)),
                        evidence: (0..40)
                            .map(|k| (format!("k{k}{}", "k".repeat(300)), "v".repeat(3000)))
                            .collect(),
                    })
                    .collect(),
            }),
            "flood" => {
                let line = "x".repeat(1000);
                for _ in 0..5_000 {
                    println!("{line}");
                    eprintln!("{line}");
                    info(&line);
                }
                Ok(Detection { healthy: true, findings: vec![] })
            }
            _ => Ok(Detection { healthy: true, findings: vec![] }),
        }
    }

    fn mitigate(ctx: Context, _d: Detection) -> Result<Outcome, Error> {
        if ctx.cfg().get("behave") == Some("findings") {
            return Ok(Outcome {
                summary: "o".repeat(1 << 20),
                mitigated: false,
                manual_steps: (0..10_000).map(|i| format!("{i} {}", "m".repeat(2000))).collect(),
            });
        }
        Ok(Outcome { summary: "nothing".into(), mitigated: false, manual_steps: vec![] })
    }
}

remedy_plugin_sdk::export!(Hostile);
