"""The backup cron job (on one broker) produces a snapshot archive."""

testinfra_hosts = ["tqm-node1"]


def test_cron_job_installed(host):
    cron = host.file("/etc/cron.d/task-queue-backup")
    assert cron.exists
    assert "/usr/local/bin/task-queue-backup.sh" in cron.content_string
    assert host.service("cron").is_running


def test_cron_job_makes_a_snapshot(host):
    line = [l for l in host.file("/etc/cron.d/task-queue-backup").content_string.splitlines()
            if "task-queue-backup.sh" in l and not l.startswith("#")][0]
    fields = line.split(None, 6)          # m h dom mon dow user command
    before = set(host.file("/backups/task-queue").listdir())
    out = host.run(f"su -s /bin/sh {fields[5]} -c '{fields[6]}'")
    assert out.rc == 0, out.stdout + out.stderr
    new = sorted(set(host.file("/backups/task-queue").listdir()) - before)
    archives = [n for n in new if n.startswith("backup-") and n.endswith(".tar.gz")]
    assert archives, (new, host.file("/var/log/task-queue/backup.log").content_string)
    listing = host.check_output(f"tar -tzf /backups/task-queue/{archives[-1]}")
    assert len(listing.splitlines()) > 1
    assert host.file(f"/backups/task-queue/{archives[-1]}").size > 0


def test_backup_only_on_one_node(host):
    other = host.get_host("ansible://tqm-node2", ansible_inventory=host.backend.ansible_inventory)
    assert not other.file("/etc/cron.d/task-queue-backup").exists
