//! Chat templates against transformers: every case of
//! tests/fixtures/chat_templates/cases.json (real templates of Qwen2.5,
//! Qwen3, SmolLM2 and Mistral-Nemo, rendered by `apply_chat_template` with
//! transformers 5.25; see SOURCE.md there) renders byte for byte the same.

use std::collections::BTreeMap;
use std::path::PathBuf;

use efrlhf::text::chat::ChatTemplate;
use minijinja::Value;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates")
}

fn field(v: &Value, key: &str) -> Value {
    v.get_attr(key).unwrap()
}

#[test]
fn every_recorded_case_renders_byte_identical() {
    let text = std::fs::read_to_string(fixture().join("cases.json")).unwrap();
    // Deserialised straight into template values: key order kept, as Python's dicts keep it.
    let cases: Value = serde_json::from_str(&text).unwrap();
    let mut count = 0;
    let mut failures = Vec::new();
    for t in field(&cases, "templates").try_iter().unwrap() {
        let file = field(&t, "file").to_string();
        let special: BTreeMap<String, String> = field(&t, "special_tokens_in_context")
            .try_iter()
            .unwrap()
            .map(|k| {
                let v = field(&field(&t, "special_tokens_in_context"), k.as_str().unwrap());
                (k.to_string(), v.to_string())
            })
            .collect();
        let template = ChatTemplate {
            source: std::fs::read_to_string(fixture().join(&file)).unwrap(),
            origin: file.clone(),
            special_tokens: special,
        };
        for case in field(&t, "cases").try_iter().unwrap() {
            count += 1;
            let id = field(&case, "id").to_string();
            let out = template.render(
                &field(&case, "messages"),
                &field(&case, "tools"),
                field(&case, "add_generation_prompt").is_true(),
                &field(&case, "template_kwargs"),
            );
            let expected = field(&case, "expected").to_string();
            match out {
                Ok(out) if out == expected => {}
                Ok(out) => failures.push(format!(
                    "{id}:\n--- ours\n{out}\n--- transformers\n{expected}"
                )),
                Err(e) => failures.push(format!("{id}: {e}")),
            }
        }
    }
    assert_eq!(count, 49);
    assert!(
        failures.is_empty(),
        "{} of {count} differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn a_folder_template_renders_a_prompt_and_errors_point_at_the_line() {
    // The causal fixture's tokenizer: chat_template.jinja, as transformers 5 saves it.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/causal/llama");
    let t = ChatTemplate::from_folder(&dir).unwrap().unwrap();
    let prompt = t.render_prompt("Summarize the reviews.").unwrap();
    // What transformers rendered for the same folder (make_causal_fixture.py --check).
    let recorded: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.parent().unwrap().join("reload_llama.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(prompt, recorded["chat_template"].as_str().unwrap());

    // The 4.x form: the template inside tokenizer_config.json, as a named list.
    let tmp = std::env::temp_dir().join(format!("efrlhf-chat-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let config = serde_json::json!({
        "eos_token": {"content": "</s>", "special": true},
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}\n{% endfor %}\n{% if add_generation_prompt %}\n{{ undefined_function() }}\n{% endif %}"}
        ]
    });
    std::fs::write(tmp.join("tokenizer_config.json"), config.to_string()).unwrap();
    let t = ChatTemplate::from_folder(&tmp).unwrap().unwrap();
    assert_eq!(t.special_tokens["eos_token"], "</s>");
    let err = t.render_prompt("hi").unwrap_err();
    assert!(
        err.contains("tokenizer_config.json (chat_template) line 4"),
        "{err}"
    );
    std::fs::write(
        tmp.join("tokenizer_config.json"),
        r#"{"eos_token": "</s>"}"#,
    )
    .unwrap();
    assert_eq!(ChatTemplate::from_folder(&tmp).unwrap(), None);
    std::fs::remove_dir_all(&tmp).ok();
}
