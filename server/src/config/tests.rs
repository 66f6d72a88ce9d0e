use super::*;
use crate::cli::Cli;
use clap::{CommandFactory, FromArgMatches};

fn resolve(argv: &[&str]) -> Result<Config, ConfigError> {
    let m = Cli::command().try_get_matches_from(argv).unwrap();
    let cli = Cli::from_arg_matches(&m).unwrap();
    Config::resolve(&cli.daemon, Some(&m))
}

/// `resolve` of `vm-catalogd` and the words of `line`.
fn resolve_line(line: &str) -> Config {
    let argv: Vec<&str> = std::iter::once("vm-catalogd")
        .chain(line.split_whitespace())
        .collect();
    resolve(&argv).unwrap()
}

#[test]
fn sources_keep_command_line_order_across_both_options() {
    let c = resolve(&[
        "vm-catalogd",
        "--source",
        "a=/a",
        "--trusted-source",
        "t=/t",
        "--source",
        "b=/b",
    ])
    .unwrap();
    let order: Vec<_> = c
        .pipeline
        .sources
        .iter()
        .map(|s| (s.label.as_str(), s.trust))
        .collect();
    assert_eq!(
        order,
        [
            ("builtin", Trust::Trusted),
            ("a", Trust::Untrusted),
            ("t", Trust::Trusted),
            ("b", Trust::Untrusted)
        ]
    );
}

#[test]
fn bad_sources_are_refused_clearly() {
    let e = resolve(&["vm-catalogd", "--source", "nolabel"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--source: expected LABEL=DIR, got \"nolabel\""
    );
    let e = resolve(&["vm-catalogd", "--source", "bad label=/x"]).unwrap_err();
    assert!(e.to_string().starts_with("--source: invalid label"), "{e}");
    let e = resolve(&["vm-catalogd", "--source", "user=/x"]).unwrap_err();
    assert!(matches!(e, ConfigError::DuplicateLabel(l) if l.as_str() == "user"));
    let e = resolve(&["vm-catalogd", "--trusted-source", "builtin=/x"]).unwrap_err();
    assert!(matches!(e, ConfigError::DuplicateLabel(l) if l.as_str() == "builtin"));
    assert!(resolve(&["vm-catalogd", "--no-partitions", "--source", "user=/x"]).is_ok());
    let e = resolve(&[
        "vm-catalogd",
        "--source",
        "a=/x",
        "--trusted-source",
        "a=/y",
    ])
    .unwrap_err();
    assert!(matches!(e, ConfigError::DuplicateLabel(l) if l.as_str() == "a"));
}

#[test]
fn trusted_targets_must_be_absolute_and_normal() {
    assert!(resolve(&["vm-catalogd", "--trusted-target", "/opt/img/"]).is_ok());
    for bad in ["img/", "/usr/img/../..", "relative/../x"] {
        let e = resolve(&["vm-catalogd", "--trusted-target", bad]).unwrap_err();
        assert!(matches!(e, ConfigError::TrustedTarget(_)), "{bad}: {e}");
    }
}

#[test]
fn groups_resolve_by_name_or_number() {
    assert_eq!(group("--admin-group", "0").unwrap(), 0);
    assert!(group("--admin-group", "root").is_ok());
    assert!(group("--admin-group", "no-such-group-here").is_err());
}

#[test]
fn defaults() {
    let c = resolve(&["vm-catalogd"]).unwrap();
    assert_eq!(
        c.socket,
        SocketConfig::Path(SocketOptions {
            path: "/run/vm-catalog/socket".into(),
            mode: 0o666,
            group: None,
        })
    );
    assert_eq!(c.pipeline.sources.len(), 1);
    assert_eq!(c.watch, Some(Duration::from_millis(200)));
    assert_eq!(
        c.pipeline.partitions,
        Some(PartitionConfig::new("/run/vm-catalog/mnt"))
    );
    let ApplyConfig::S6rc(s) = c.pipeline.apply else {
        panic!("the default applier is s6-rc")
    };
    let mut want = S6rcConfig::new("/run/vm-catalog/s6-rc");
    want.bin_dir = std::env::var_os("S6RC_BINDIR").map(PathBuf::from);
    assert_eq!(*s, want, "the daemon's defaults are the applier's");
}

#[test]
fn partition_options_become_the_managers_config() {
    let c = resolve_line(
        "--state-dir /st --partition-disk loop3 --partition-disk vdb --ext LABEL=x \
         --fsck --uevent-group 3 --sysfs /fake/sys",
    );
    let p = c.pipeline.partitions.unwrap();
    assert_eq!(p.mount_base, PathBuf::from("/st/mnt"));
    assert_eq!(p.sysfs_root, PathBuf::from("/fake/sys"));
    assert_eq!(
        p.disks,
        DiskPolicy::Named(vec!["loop3".into(), "vdb".into()])
    );
    assert_eq!(p.ext, ExtSource::Value("LABEL=x".into()));
    assert!(p.fsck);
    assert_eq!(p.uevent_group, UeventGroup::Rebroadcast(3));
    let p = resolve_line("--all-disks --uevent-group 1")
        .pipeline
        .partitions
        .unwrap();
    assert_eq!(p.disks, DiskPolicy::All);
    assert_eq!(p.uevent_group, UeventGroup::Kernel);
    assert_eq!(resolve_line("--no-partitions").pipeline.partitions, None);
}

#[test]
fn s6rc_options_become_the_appliers_config() {
    let c = resolve_line(
        "--state-dir /st --live /l --scandir /sc --prefix x- --service-template /t \
         --start-command /bin/go --restart-changed --max-services 7",
    );
    let ApplyConfig::S6rc(s) = c.pipeline.apply else {
        panic!("s6-rc is the default applier")
    };
    assert_eq!(s.state_dir, PathBuf::from("/st/s6-rc"));
    assert_eq!(s.live_dir, PathBuf::from("/l"));
    assert_eq!(s.scandir, PathBuf::from("/sc"));
    assert_eq!(s.prefix, "x-");
    assert_eq!(s.template_dir, Some(PathBuf::from("/t")));
    assert_eq!(s.start_command, PathBuf::from("/bin/go"));
    assert!(s.restart_changed);
    assert_eq!(s.max_services, 7);
    let c = resolve_line("--apply none");
    assert_eq!(c.pipeline.apply, ApplyConfig::None);
    assert_eq!(c.pipeline.apply.kind().as_str(), "none");
}

#[test]
fn s6_instance_options_become_the_appliers_config() {
    let c = resolve_line(
        "--state-dir /st --apply s6-instance --instance-service /run/service/vmm \
         --instances-up --instance-bindir /opt/s6/bin --restart-changed --program-timeout 9 \
         --vm-layout spectrum",
    );
    assert_eq!(c.pipeline.apply.kind().as_str(), "s6-instance");
    let ApplyConfig::Instance(i) = c.pipeline.apply else {
        panic!("s6-instance was asked for")
    };
    assert_eq!(i.state_dir, PathBuf::from("/st/s6-instance"));
    assert_eq!(i.service, PathBuf::from("/run/service/vmm"));
    assert_eq!(i.bin_dir, Some(PathBuf::from("/opt/s6/bin")));
    assert_eq!(
        i.naming,
        Naming::Id,
        "the spectrum layout names instances by id"
    );
    assert!(i.start && i.restart_changed);
    assert_eq!(i.timeout, Duration::from_secs(9));
    let ApplyConfig::Instance(i) = resolve_line("--apply s6-instance").pipeline.apply else {
        panic!("s6-instance was asked for")
    };
    let mut want = InstanceConfig::new("/run/vm-catalog/s6-instance");
    want.naming = Naming::Name;
    assert_eq!(*i, want, "the daemon's defaults are the applier's");
    let ApplyConfig::S6rc(s) = resolve_line("--program-timeout 5").pipeline.apply else {
        panic!("s6-rc is the default")
    };
    assert_eq!(s.timeout, Duration::from_secs(5));
    assert!(
        Cli::command()
            .try_get_matches_from(["vm-catalogd", "--program-timeout", "0"])
            .is_err()
    );
}

#[test]
fn cross_source_providers_are_refused_unless_the_flag_allows_them() {
    let line = "--state-dir /st --vm-dir /v";
    assert!(!resolve_line(line).pipeline.merge.cross_source_providers);
    let allowed = resolve_line(&format!("{line} --allow-cross-source-providers"));
    assert!(allowed.pipeline.merge.cross_source_providers);
}

#[test]
fn names_layout_and_the_builtin_label_become_the_merge_options() {
    let c = resolve_line(
        "--state-dir /st --vm-dir /v --names qualified --vm-layout spectrum \
         --builtin sys=/usr/lib/spectrum/vm",
    );
    assert_eq!(
        c.pipeline.merge,
        MergeOptions {
            names: crate::catalog::Names::Qualified,
            layout: crate::catalog::Layout::Spectrum,
            vm_dir: "/v".into(),
            cross_source_providers: false,
        }
    );
    assert_eq!(c.pipeline.ids_file, PathBuf::from("/st/vm-ids"));
    let b = &c.pipeline.sources[0];
    assert_eq!(
        (b.label.as_str(), b.kind, b.trust),
        (
            "sys",
            vm_catalog_protocol::SourceKind::Builtin,
            Trust::Trusted
        )
    );
    assert_eq!(b.root, PathBuf::from("/usr/lib/spectrum/vm"));
    let d = resolve_line("--builtin /usr/img/builtin");
    assert_eq!(d.pipeline.sources[0].label.as_str(), "builtin");
    assert_eq!(d.pipeline.merge, MergeOptions::plain("/run/vm"));
    let e = resolve(&["vm-catalogd", "--builtin", "user=/x"]).unwrap_err();
    assert!(matches!(e, ConfigError::DuplicateLabel(l) if l.as_str() == "user"));
}

#[test]
fn ui_vms_resolve_with_the_layouts_default_path() {
    assert_eq!(resolve_line("--vm-dir /v").ui_vms, None);
    let c = resolve_line("--vm-dir /v --ui-vm ui --ui-vm user.x --ui-vm-socket-owner 0");
    let ui = c.ui_vms.unwrap();
    assert_eq!(ui.port, vm_catalog_protocol::stream::DEFAULT_VSOCK_PORT);
    assert_eq!(ui.names.len(), 2);
    assert_eq!(ui.access.mode, 0o600);
    assert_eq!(ui.access.owner, Owner::Uid(0));
    assert_eq!(ui.parent, Parent::Create);
    let name: VmName = "ui".parse().unwrap();
    assert_eq!(
        ui.socket.expand(&ui.vm_dir, &name, None, ui.port),
        Some(PathBuf::from("/v/ui/vsock_22083"))
    );
    let c = resolve_line(
        "--vm-layout spectrum --ui-vm ui --vsock-port 7 --ui-vm-socket-owner vmm-{id}",
    );
    let ui = c.ui_vms.unwrap();
    assert_eq!(
        ui.parent,
        Parent::Existing,
        "the hook makes /run/vsock/<id>"
    );
    let Owner::PerVm(owner) = &ui.access.owner else {
        panic!("{:?}", ui.access.owner);
    };
    let id: vm_catalog_protocol::VmId = "a1b2c3".parse().unwrap();
    assert_eq!(
        ui.socket.expand(&ui.vm_dir, &name, Some(&id), ui.port),
        Some(PathBuf::from("/run/vsock/a1b2c3/vsock_7"))
    );
    assert_eq!(
        owner.expand(&name, Some(&id)).as_deref(),
        Some("vmm-a1b2c3")
    );
}

#[test]
fn bad_ui_vm_options_are_refused_clearly() {
    let e = resolve(&["vm-catalogd", "--ui-vm", "bad name"]).unwrap_err();
    assert!(matches!(e, ConfigError::UiVmName { .. }), "{e}");
    let e = resolve(&[
        "vm-catalogd",
        "--ui-vm",
        "ui",
        "--ui-vm-socket",
        "/x/{nope}",
    ])
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--ui-vm-socket: unknown placeholder \"{nope}\": use {vm-dir}, {name}, {id}, {port}"
    );
    let e = resolve(&[
        "vm-catalogd",
        "--ui-vm",
        "ui",
        "--ui-vm-socket-owner",
        "no-such-user-here",
    ])
    .unwrap_err();
    assert!(matches!(e, ConfigError::User { .. }), "{e}");
    let e = resolve(&[
        "vm-catalogd",
        "--ui-vm",
        "ui",
        "--ui-vm-socket-owner",
        "vmm-{port}",
    ])
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--ui-vm-socket-owner: unknown placeholder \"{port}\": use {id} or {name}"
    );
}
