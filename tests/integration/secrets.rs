//! What the tool promises about secrets (issue 20), against the real
//! binary: a rendered file is as private as the key it comes from,
//! `$(VAR)` substitution reaches only the variables allowed and never the
//! tool's own, and the secret-bearing settings (one registry) are kept
//! from every command we start and hidden in what those commands print.

use std::process::Output;

use crate::helper::{Vol, bin};

/// The tool run once (`--once`) on `vol` with `args`, its output kept.
fn once(vol: &Vol, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = bin();
    cmd.args(["--once", "-o", "json", "-d"])
        .arg(vol.path())
        .args(args)
        .envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
#[test]
fn rendered_files_are_as_private_as_their_keys() {
    let vol = vol!();
    std::fs::create_dir_all(vol.path()).unwrap();
    let mut payload = configmapwatch::Payload::new();
    payload
        .insert_with_mode("secret.json", r#"{"password":"s3cret"}"#, 0o400)
        .unwrap()
        .insert_with_mode("app.json", r#"{"port":8080}"#, 0o644)
        .unwrap()
        .insert_with_mode("team/db.json", r#"{"user":"u"}"#, 0o440)
        .unwrap();
    vol.write(&payload);
    let out = vol.tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let out_dir = out.to_str().unwrap();

    // --render-dir: each file its own key's mode.
    let run = once(&vol, &["--all-keys", "--render-dir", out_dir], &[]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(mode(&out.join("secret.json")), 0o400);
    assert_eq!(mode(&out.join("app.json")), 0o644);
    assert_eq!(mode(&out.join("team/db.json")), 0o440);

    // --render-to: the selected key's mode.
    let one = out.join("one.json");
    let one_path = one.to_str().unwrap();
    let run = once(
        &vol,
        &["--file", "secret.json", "--render-to", one_path],
        &[],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(mode(&one), 0o400);

    // An explicit --render-mode is the mode, whatever the key's.
    let run = once(
        &vol,
        &[
            "--file",
            "secret.json",
            "--render-to",
            one_path,
            "--render-mode",
            "0640",
        ],
        &[],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(mode(&one), 0o640);
}

#[test]
fn substitution_reaches_only_allowed_variables_and_never_the_tools_own() {
    let vol = vol!();
    let out = vol.tmp.path().join("app.yaml");
    let out_path = out.to_str().unwrap();
    let header = (
        "CONFIGMAPWATCH_WEBHOOK_HEADER",
        "Authorization: Bearer topsecret-token",
    );
    vol.publish(&[("app.yaml", "auth: ${CONFIGMAPWATCH_WEBHOOK_HEADER}\n")]);
    let render = ["--file", "app.yaml", "--render-to", out_path];

    // Even an allow-list of everything does not reach the tool's own: the
    // version is refused, nothing is written.
    let args = [&render[..], &["--render-env-allow", "*"]].concat();
    let run = once(&vol, &args, &[header]);
    assert!(!run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("the tool's own"), "{}", text(&run));
    assert!(!out.exists());
    assert!(!text(&run).contains("topsecret"), "{}", text(&run));

    // Tolerant: left as written.
    let args = [
        &render[..],
        &["--render-env-allow", "*", "--render-env-tolerant"],
    ]
    .concat();
    let run = once(&vol, &args, &[header]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "auth: ${CONFIGMAPWATCH_WEBHOOK_HEADER}\n"
    );

    // Only the variables listed: APP_* is, HOME is not.
    vol.publish(&[("app.yaml", "url: ${APP_URL}\nhome: $(HOME)\n")]);
    let args = [&render[..], &["--render-env-allow", "APP_*"]].concat();
    let run = once(&vol, &args, &[("APP_URL", "http://db/"), ("HOME", "/root")]);
    assert!(!run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains("HOME is not in the render's allow-list"),
        "{}",
        text(&run)
    );
    vol.publish(&[("app.yaml", "url: ${APP_URL}\n")]);
    let run = once(&vol, &args, &[("APP_URL", "http://db/")]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "url: http://db/\n");

    // --render-env alone no longer means "the whole environment".
    let args = [&render[..], &["--render-env"]].concat();
    let run = once(&vol, &args, &[]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(text(&run).contains("--render-env-allow"), "{}", text(&run));
}

/// The confirmation URL's credentials (and a webhook header's value) are
/// kept from every command we start, and hidden in what they print: the
/// actions' command, the checker and the confirmation command alike.
#[cfg(unix)]
#[test]
fn secret_settings_never_reach_a_command_nor_our_output_through_one() {
    let vol = vol!();
    vol.publish(&[("config.json", r#"{"n":1}"#)]);
    let confirm = "http://reloader:hunter2-secret@127.0.0.1:1/status";
    let header = "Authorization: Bearer topsecret-token";
    let env_file = vol.tmp.path().join("env");
    // The command learns the secrets some other way (LEAK) and prints
    // them, with its environment.
    let print = format!(
        "env > {}; echo \"$LEAK\" >&2; echo hunter2-secret topsecret-token >&2; exit 1",
        env_file.display()
    );
    let env = [
        ("CONFIGMAPWATCH_CONFIRM_URL", confirm),
        ("CONFIGMAPWATCH_WEBHOOK_HEADER", header),
        ("LEAK", confirm),
    ];
    let assert_hidden = |run: &Output| {
        let all = text(run);
        assert!(!all.contains("hunter2"), "{all}");
        assert!(!all.contains("topsecret"), "{all}");
        assert!(all.contains("***"), "{all}");
        let seen = std::fs::read_to_string(&env_file).unwrap();
        for var in [
            "CONFIGMAPWATCH_CONFIRM_URL",
            "CONFIGMAPWATCH_WEBHOOK_HEADER",
        ] {
            assert!(!seen.contains(var), "{var} reached the command:\n{seen}");
        }
        std::fs::remove_file(&env_file).unwrap();
    };

    // The action's command: its stderr tail is logged.
    let run = once(&vol, &["--on-start", "--exec", "sh", "-c", &print], &env);
    assert!(!run.status.success(), "{}", text(&run));
    assert_hidden(&run);

    // The checker: its refusal is an event on stdout. (A confirmation
    // needs an action; with --once and no --on-start it does not run.)
    let checker = format!("sh -c '{print}'");
    let run = once(&vol, &["--validate-exec", &checker, "--exec", "true"], &env);
    assert!(!run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains("refused by --validate-exec"),
        "{}",
        text(&run)
    );
    assert_hidden(&run);

    // The confirmation command (the header's value is the secret here).
    let env = [
        ("CONFIGMAPWATCH_WEBHOOK_HEADER", header),
        ("CONFIGMAPWATCH_CONFIRM_EXEC", &format!("sh -c '{print}'")),
        ("LEAK", header),
    ];
    let run = once(&vol, &["--on-start", "--exec", "true"], &env);
    assert!(!run.status.success(), "{}", text(&run));
    assert!(!text(&run).contains("topsecret"), "{}", text(&run));
    let seen = std::fs::read_to_string(&env_file).unwrap();
    assert!(!seen.contains("CONFIGMAPWATCH_WEBHOOK_HEADER"), "{seen}");
    assert!(!seen.contains("CONFIGMAPWATCH_CONFIRM_EXEC"), "{seen}");
}
