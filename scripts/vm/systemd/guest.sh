#!/bin/bash
# The steps of the systemd VM test (scripts/vm-systemd-test.sh), run in the guest by c2d-vm-test.service
# at every boot: the first boot installs and exercises, then reboots; the second checks the reboot,
# the uninstall, and powers off. Each step prints one line the host counts:
#   C2D-VMSD <run> step <name>: PASS|FAIL <what was seen>
# The install follows README's "Put it on a Pi" command for command (the hub and the board are the
# same machine here, so scp/ssh are plain copies). Everything is checked from outside the agent:
# systemd's view (systemctl show, the journal), the kernel's (gpio-sim sysfs values, GPIO trace
# events, the uleds LED's brightness log) and the hub's (c2d).
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8
run=$(cat /mnt/payload/run-id)
arch=$(cat /mnt/payload/arch) # the packages' architecture: amd64 or arm64 (the guest's own)
statedir=/var/lib/c2d-vm-test
mkdir -p "$statedir"
phase=$(cat "$statedir/phase" 2>/dev/null || echo first)
# shellcheck disable=SC1091
. /run/c2d-vm/pi.env # SIM, BASE, CHIP (c2d-vm-pi)
ACT_LOG=/run/c2d-vm/ACT.events

say() { echo "C2D-VMSD $run $*" >/dev/console; }
pass() { say "step $1: PASS ${2:-}"; }
fail() {
	say "step $1: FAIL ${2:-}"
	journalctl -b --no-pager -n 40 -u c2d-agent -u c2d-hub -u c2d-agent.path 2>&1 | sed 's/^/    | /' >/dev/console
}
# check NAME DETAIL COMMAND...: PASS when the command succeeds.
check() {
	local name=$1 detail=$2
	shift 2
	if "$@"; then pass "$name" "$detail"; else fail "$name" "$detail"; fi
}
t_phase=$(cut -d' ' -f1 /proc/uptime)
timed() { # timed NAME: guest time since the previous call, for the host's "where the time went"
	local now
	now=$(cut -d' ' -f1 /proc/uptime)
	say "time $(awk "BEGIN{printf \"%.1f\", $now - $t_phase}") $1"
	t_phase=$now
}
# wait_for SECONDS COMMAND...: polls an observable condition (not a sleep standing in for one).
wait_for() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@"; do
		(($(date +%s) < deadline)) || return 1
		sleep 0.2
	done
}
line() { cat "$SIM/sim_gpio$1/value"; } # the level gpio-sim last saw driven on GPIO<n>
line_is() { [[ $(line "$1") == "$2" ]]; }
# Trace events for GPIO<n> driven to level v since the trace mark m: "gpio_value: <base+n> set <v>".
trace_count() { sed -n "$(($3 + 1)),\$p" /sys/kernel/tracing/trace | grep -c "gpio_value: $((BASE + $1)) set $2\$"; }
trace_mark() { wc -l </sys/kernel/tracing/trace; }
act_on_count() { awk -v since="${1:-0}" '$1 > since && $2 > 0' "$ACT_LOG" | wc -l; }
now_ns() { date +%s%N; }
agent() { systemctl show -p "$1" --value c2d-agent.service; }
active() { [[ $(systemctl is-active "$1") == active ]]; }
restarted_since() { [[ $(agent NRestarts) -gt $1 ]] && active c2d-agent.service && [[ $(agent MainPID) != "$2" && $(agent MainPID) != 0 ]]; }
journal_has() { journalctl -b --no-pager "${@:2}" | grep -qF -- "$1"; }
connected() { agent StatusText | grep -q '^connected to'; }
secs() { systemd-analyze timespan "$1" | awk '$1 == "μs:" {print int($2 / 1000000)}'; } # 30s → 30

cd /root
first_boot() {
	say "boot 1: $arch, systemd $(systemctl --version | head -1 | cut -d' ' -f2), kernel $(uname -r), up after $(cut -d' ' -f1 /proc/uptime) s"
	check "pi5 gpio" "$CHIP group $(stat -c %G "$CHIP"), label $(cat "/sys/class/gpio/gpiochip$BASE/label"), $(cat "/sys/class/gpio/gpiochip$BASE/ngpio") lines" \
		test "$(stat -c %G:%a "$CHIP")" = gpio:660
	check "act led" "/sys/class/leds/ACT" test -e /sys/class/leds/ACT/brightness
	timed boot1

	# README "Put it on a Pi", each block run as the image's user pi (passwordless sudo, as on
	# Raspberry Pi OS) in its home, exactly as written there; a "sudoedit" gets a sed as its editor.
	# The hub's machine and the board are this one machine, so "scp" is a copy and "ssh" a no-op.
	install -d -o pi -g pi /home/pi/dist && install -o pi -g pi /mnt/payload/dist/*.deb /home/pi/dist/
	editor() { printf '#!/bin/sh\nexec sed -i %q "$1"\n' "$2" >"/home/pi/.edit-$1" && chmod 755 "/home/pi/.edit-$1"; }
	editor hostname 's/^hostname: ""/hostname: hub.local/'
	editor ca-file 's|^  # ca_file: /etc/c2d/hub-ca.pem|  ca_file: /etc/c2d/hub-ca.pem|'
	readme() { # readme STEP SCRIPT: one README block as pi; output in /root/readme-STEP.log
		runuser -u pi -- bash -euo pipefail -c "cd ~; [ ! -f ~/.readme-env ] || . ~/.readme-env; $2" >"/root/readme-$1.log" 2>&1
	}

	# 2. Run a hub (step 1, the packages, is scripts/package-deb.sh on the host).
	if readme 2 '
		sudo apt install -y ./dist/c2d-hub_*_'"$arch"'.deb ./dist/c2d_*_'"$arch"'.deb
		SUDO_EDITOR=~/.edit-hostname sudoedit /etc/c2d/hub.yaml
		sudo systemctl restart c2d-hub
		sudo c2d-hub connection-string --data /var/lib/c2d-hub >owner.conn
		sudo install -m 0644 /var/lib/c2d-hub/tls/ca.pem hub-ca.pem'; then
		pass "install hub" "c2d-hub $(systemctl is-active c2d-hub), hostname $(grep '^hostname:' /etc/c2d/hub.yaml), CA copied: $(stat -c %U:%a /home/pi/hub-ca.pem)"
	else
		fail "install hub" "$(tail -3 /root/readme-2.log)"
	fi
	owner=$(cat /home/pi/owner.conn)
	check "hub connection string" "$(echo "$owner" | sed 's/SharedAccessKey=.*/SharedAccessKey=…/')" \
		grep -q '^HostName=hub.local;SharedAccessKeyName=iothubowner;SharedAccessKey=' <<<"$owner"
	# The root-run connection-string must not leave the hub unable to open its own files.
	check "hub data owned by c2d-hub" "$(find /var/lib/c2d-hub ! -user c2d-hub | head -3 | tr '\n' ' ')" \
		test -z "$(find /var/lib/c2d-hub ! -user c2d-hub)"
	timed "README 2: hub"

	# 3. Provision the board (the export lines are kept for the later blocks, as one shell would).
	printf 'export C2D_CONNECTION_STRING=%q\nexport C2D_ENDPOINT=https://hub.local:8443  C2D_CA_FILE=~/hub-ca.pem\n' "$owner" >/home/pi/.readme-env
	if readme 3 '
		c2d device create pump-7
		c2d device connection-string pump-7 > pump-7.conn'; then
		pass provision "as pi: pump-7: $(sed 's/SharedAccessKey=.*/SharedAccessKey=…/' /home/pi/pump-7.conn)"
	else
		fail provision "$(tail -3 /root/readme-3.log)"
	fi
	export C2D_CONNECTION_STRING=$owner C2D_ENDPOINT=https://hub.local:8443 C2D_CA_FILE=/home/pi/hub-ca.pem

	# 4. Install the agent on the Pi ("scp dist/c2d-agent_*_armhf.deb pump-7.conn hub-ca.pem pi@pump-7:").
	cp /home/pi/dist/c2d-agent_*_"$arch".deb /home/pi/ && chown pi: /home/pi/c2d-agent_*_"$arch".deb
	readme 4a "sudo apt install -y ./c2d-agent_*_$arch.deb"
	check "install agent" "user $(id c2d-agent 2>&1); path unit $(systemctl is-active c2d-agent.path); agent $(systemctl is-active c2d-agent.service)" \
		bash -c 'id -nG c2d-agent | grep -qw gpio && [[ $(systemctl is-active c2d-agent.path) == active && $(systemctl is-active c2d-agent.service) != active ]]'
	check "idle until provisioned" "apt: $(grep -m1 'idle until' /root/readme-4a.log)" \
		grep -q 'installed but idle until you write the device connection string' /root/readme-4a.log
	t_cs=$(date +%s)
	if readme 4b '
		sudo install -m 0644 hub-ca.pem /etc/c2d/hub-ca.pem
		SUDO_EDITOR=~/.edit-ca-file sudoedit /etc/c2d/agent.yaml
		sudo install -m 0640 -g c2d-agent pump-7.conn /etc/c2d/connection-string && rm pump-7.conn
		sudo c2d-agent check-config /etc/c2d/agent.yaml'; then
		pass "check-config" "$(grep -c . /root/readme-4b.log) lines, exit 0; $(grep -m1 ca_file /etc/c2d/agent.yaml | sed 's/^ *//')"
	else
		fail "check-config" "$(tail -3 /root/readme-4b.log)"
	fi
	timed "README 3+4: provision, agent"

	# The path unit starts the agent once the connection string exists.
	if wait_for 60 active c2d-agent.service; then
		pass "path unit" "c2d-agent active $(($(date +%s) - t_cs)) s after /etc/c2d/connection-string was written"
	else
		fail "path unit" "c2d-agent $(systemctl is-active c2d-agent.service) 60 s after the connection string"
	fi
	# README 5: systemctl status shows the notify status.
	if wait_for 60 connected; then
		pass "notify status" "$(systemctl status c2d-agent --no-pager | grep -m1 'Status:' | sed 's/^ *//')"
	else
		fail "notify status" "StatusText=$(agent StatusText)"
	fi
	# Outputs in their safe state at start: relay1 is active-low (off = high), buzzer off = low.
	check "safe at start" "GPIO17=$(line 17) GPIO27=$(line 27) (want 1 0)" bash -c "[[ \$(cat $SIM/sim_gpio17/value) == 1 && \$(cat $SIM/sim_gpio27/value) == 0 ]]"
	# README 5 as pi: status, journal, the operator's view, identify (its blinks are checked below).
	readme 5 '
		systemctl status c2d-agent --no-pager
		journalctl -u c2d-agent --no-pager -n 20
		c2d device show pump-7'
	check "device connected" "as pi: $(grep -i -m1 'connection' /root/readme-5.log)" grep -qi 'Connected since' /root/readme-5.log
	timed "install + start"

	# c2d send --wait: the line the kernel sees moves.
	out=$(c2d send pump-7 --props 'target=relay1;action=on' --wait 30s 2>&1)
	rc=$?
	check "send --wait" "exit $rc, GPIO17=$(line 17) (want 0: relay on, active low); $(echo "$out" | tail -1)" \
		bash -c "[[ $rc == 0 ]] && [[ \$(cat $SIM/sim_gpio17/value) == 0 ]]"
	c2d send pump-7 --props 'target=relay1;action=off' --wait 30s >/dev/null 2>&1
	check "send off" "GPIO17=$(line 17) (want 1)" line_is 17 1
	# README 5's identify: blinks ACT ten times, pulses the buzzer.
	since=$(now_ns)
	m=$(trace_mark)
	readme 5b "c2d send pump-7 --props 'command=identify' --wait 30s"
	rc=$?
	check "act blink" "exit $rc, ACT on $(act_on_count "$since") times in the uleds LED (want 10), buzzer GPIO27 driven high $(trace_count 27 1 "$m") time(s)" \
		bash -c "[[ $rc == 0 && $(act_on_count "$since") == 10 && $(trace_count 27 1 "$m") == 1 ]]"
	timed commands

	# SIGKILL: systemd restarts it; outputs safe at start (the relay was on when it died).
	c2d send pump-7 --props 'target=relay1;action=on' --wait 30s >/dev/null 2>&1
	n=$(agent NRestarts) pid=$(agent MainPID)
	on_before=$(line 17)
	systemctl kill -s SIGKILL c2d-agent
	if wait_for 60 restarted_since "$n" "$pid" && wait_for 60 connected; then
		check "SIGKILL restart" "relay on ($on_before) before; restarted (NRestarts $n→$(agent NRestarts)); GPIO17=$(line 17) after (want 1)" line_is 17 1
	else
		fail "SIGKILL restart" "c2d-agent $(systemctl is-active c2d-agent) NRestarts=$(agent NRestarts)"
	fi

	# Hung agent: SIGSTOP; systemd's watchdog kills and restarts it.
	n=$(agent NRestarts) pid=$(agent MainPID)
	wd=$(secs "$(agent WatchdogUSec)")
	t0=$(date +%s)
	kill -STOP "$pid"
	if wait_for $((wd + 60)) restarted_since "$n" "$pid"; then
		took=$(($(date +%s) - t0))
		rs=$(secs "$(agent RestartUSec)")
		# Slack past WatchdogSec + RestartSec: the hung process's abort and the new one's start.
		# Emulated arm64 (TCG, 5-10x slower than the host) takes up to ~15 s more for those on a
		# loaded 2-core machine; a watchdog that did not fire never restarts it at all.
		slack=10
		[[ $arch == arm64 ]] && slack=25
		check watchdog "restarted ${took} s after SIGSTOP (WatchdogSec=${wd}s + RestartSec=${rs}s, slack ${slack}s); journal: $(journalctl -b --no-pager -u c2d-agent | grep -m1 -o 'Watchdog timeout.*')" \
			bash -c "journalctl -b --no-pager -u c2d-agent | grep -q 'Watchdog timeout' && (( $took <= $wd + $rs + $slack ))"
	else
		fail watchdog "not restarted within $((wd + 60)) s of SIGSTOP (WatchdogSec=${wd}s)"
		kill -CONT "$pid" 2>/dev/null
	fi
	wait_for 60 connected
	timed "kill + watchdog"

	# Hub restart: the agent reconnects by itself; commands sent meanwhile run once each.
	sudo systemctl stop c2d-hub
	wait_for 30 bash -c '! systemctl show -p StatusText --value c2d-agent | grep -q "^connected"'
	sudo systemctl start c2d-hub
	m=$(trace_mark)
	for i in 1 2 3; do c2d send pump-7 --props 'target=relay1;action=pulse;duration=300ms' >/dev/null 2>&1; done
	out=$(c2d send pump-7 --props 'target=relay1;action=pulse;duration=300ms' --wait 60s 2>&1)
	rc=$?
	wait_for 30 bash -c '[[ $(c2d queue show pump-7 -o json | grep -c "\"messageId\"" || true) == 0 ]]'
	pulses=$(trace_count 17 0 "$m")
	check "hub restart" "agent $(agent StatusText | cut -d';' -f1); 4 pulses sent across the restart, GPIO17 driven on $pulses time(s) (want 4); last: exit $rc" \
		bash -c "[[ $rc == 0 && $pulses == 4 ]]"
	timed "hub restart"

	# The sandbox, under the unit's own settings (read from the installed unit) as its user.
	props=()
	while IFS= read -r l; do props+=(-p "$l"); done < <(sed -n '/^\[Service\]/,/^\[/p' /lib/systemd/system/c2d-agent.service |
		grep -E '^[A-Z][A-Za-z]+=' | grep -vE '^(Type|NotifyAccess|ExecStart|WatchdogSec|Restart|RestartSec|TimeoutStopSec|TimeoutStartSec)=')
	sandbox() { systemd-run --quiet --wait --pipe --collect "${props[@]}" /bin/bash -c "$1" 2>&1; }
	plain() { systemd-run --quiet --wait --pipe --collect -p User=c2d-agent -p SupplementaryGroups=gpio /bin/bash -c "$1" 2>&1; }
	probe='r() { if ( exec 3<"$1" ) 2>/dev/null; then echo "$1:open"; else echo "$1:denied"; fi; }
		rw() { if ( exec 3<>"$1" ) 2>/dev/null; then echo "$1:open"; else echo "$1:denied"; fi; }
		w() { if ( echo x >"$1" ) 2>/dev/null; then echo "$1:written"; rm -f "$1"; else echo "$1:denied"; fi; }
		rw '"$CHIP"'; r /dev/mem; rw /dev/net/tun; r /dev/vda
		w "${STATE_DIRECTORY:-/var/lib/c2d-agent}/probe"; w /etc/c2d/probe; w /var/lib/probe; w /usr/local/probe
		echo x >/var/tmp/c2d-sandbox-probe 2>/dev/null # private (PrivateTmp): must not reach the real /var/tmp
		if ( echo 0 >/sys/class/leds/ACT/brightness ) 2>/dev/null; then echo led:written; else echo led:denied; fi'
	got=$(sandbox "$probe" | tr '\n' ' ')
	want="$CHIP:open /dev/mem:denied /dev/net/tun:denied /dev/vda:denied /var/lib/c2d-agent/probe:written /etc/c2d/probe:denied /var/lib/probe:denied /usr/local/probe:denied led:written "
	check sandbox "$((${#props[@]} / 2)) settings of the installed unit, as c2d-agent: $got; /var/tmp private: $(test -e /var/tmp/c2d-sandbox-probe && echo NO || echo yes)" \
		bash -c '[[ "$1" == "$2" && ! -e /var/tmp/c2d-sandbox-probe ]]' _ "$got" "$want"
	# The control: the same user without the unit's settings opens /dev/net/tun (mode 0666), so it is
	# the sandbox's device policy that refuses it above, not file permissions.
	ctl=$(plain "if ( exec 3<>/dev/net/tun ) 2>/dev/null; then echo open; else echo denied; fi")
	check "sandbox control" "/dev/net/tun as c2d-agent without the unit's settings: $ctl" test "$ctl" = open
	timed sandbox

	# journald holds what README's troubleshooting table quotes.
	check "journal: watchdog" "$(journalctl -b --no-pager -u c2d-agent | grep -m1 -o 'Watchdog timeout.*')" \
		journal_has "Watchdog timeout" -u c2d-agent
	# A system whose udev gives /dev/gpiochip* to no gpio group: the error the table quotes.
	chgrp root "$CHIP"
	systemctl restart c2d-agent
	wait_for 30 journal_has "permission denied — is the user in the gpio group?" -u c2d-agent
	check "journal: gpio group" "$(journalctl -b --no-pager -u c2d-agent | grep -m1 -o 'cannot open /dev/gpiochip.*group?')" \
		journal_has "permission denied — is the user in the gpio group?" -u c2d-agent
	udevadm trigger --action=add --subsystem-match=gpio && udevadm settle -t 30
	check "udev gpio rule" "$CHIP $(stat -c %G:%a "$CHIP") after udevadm trigger" test "$(stat -c %G "$CHIP")" = gpio
	# A bad pin: the agent stops at start-up naming the field.
	SUDO_EDITOR="sed -i 's/^    pin: GPIO17/    pin: GPIO99/'" sudoedit /etc/c2d/agent.yaml
	systemctl reset-failed c2d-agent; systemctl restart c2d-agent
	wait_for 30 journal_has 'outputs.relay1.pin: no line "GPIO99"' -u c2d-agent
	check "journal: bad pin" "$(journalctl -b --no-pager -u c2d-agent | grep -m1 -o 'outputs.relay1.pin: no line "GPIO99".\{0,40\}')" \
		journal_has 'outputs.relay1.pin: no line "GPIO99"' -u c2d-agent
	SUDO_EDITOR="sed -i 's/^    pin: GPIO99/    pin: GPIO17/'" sudoedit /etc/c2d/agent.yaml
	systemctl reset-failed c2d-agent; sudo systemctl restart c2d-agent
	check "agent back" "after the config is fixed: $(agent StatusText)" wait_for 60 connected
	timed journal

	# A healthy agent feeds the watchdog: the only restarts in this boot are the two the test caused
	# (SIGKILL, SIGSTOP) and the two failed starts it provoked (gpio group, bad pin) — no others.
	wdn=$(journalctl -b --no-pager -u c2d-agent | grep -c 'Watchdog timeout')
	check "no spurious restarts" "watchdog timeouts this boot: $wdn (want 1, the SIGSTOP); NRestarts $(agent NRestarts)" test "$wdn" = 1

	# Reboot with a message carried out but its completion lost: blink ACT, stop the hub while it
	# blinks (the message stays delivered but unsettled in the hub), reboot. After the boot the hub
	# redelivers it; the executed-id log must answer without blinking again.
	since=$(now_ns)
	# 12 s of blinking: the hub's stop must come before the completion even on emulated arm64
	# (with 3 s, a slow stop let the completion through and nothing was left to redeliver).
	c2d send pump-7 --mid reboot-blink-1 --props 'target=act;action=blink;count=15;interval=400ms' >/dev/null 2>&1
	wait_for 30 bash -c "[[ \$(awk -v s=$since '\$1 > s && \$2 > 0' $ACT_LOG | wc -l) -ge 1 ]]"
	sudo systemctl stop c2d-hub
	echo "$(act_on_count "$since")" >"$statedir/blinks-at-stop"
	wait_for 30 journal_has "reboot-blink-1" -u c2d-agent -g "msg=done"
	echo "$(act_on_count "$since")" >"$statedir/blinks-before"
	cat /proc/sys/kernel/random/boot_id >"$statedir/boot-1"
	echo second >"$statedir/phase"
	sync
	say "rebooting (blink message reboot-blink-1 ran $(cat "$statedir/blinks-before") of 15 blinks, $(cat "$statedir/blinks-at-stop") when the hub had stopped)"
	timed "before reboot"
	systemctl reboot
	exit 0
}

# --- second boot ----------------------------------------------------------------------------------
second_boot() {
	export C2D_ENDPOINT=https://hub.local:8443 C2D_CA_FILE=/home/pi/hub-ca.pem
	C2D_CONNECTION_STRING=$(cat /home/pi/owner.conn)
	export C2D_CONNECTION_STRING
	say "boot 2: up after $(cut -d' ' -f1 /proc/uptime) s"
	timed boot2
	if [[ -s $statedir/boot-1 && $(cat /proc/sys/kernel/random/boot_id) != "$(cat "$statedir/boot-1")" ]] && wait_for 90 connected; then
		pass reboot "new boot; c2d-agent came back by itself: $(agent StatusText | cut -d';' -f1)"
	else
		fail reboot "c2d-agent $(systemctl is-active c2d-agent): $(agent StatusText)"
	fi
	if wait_for 60 journal_has "reboot-blink-1" -u c2d-agent -g 'redelivered after it was settled'; then
		check "no double execution" "reboot-blink-1 redelivered after the reboot; ACT blinked $(act_on_count 0) time(s) this boot (want 0); $(journalctl -b --no-pager -u c2d-agent -g 'redelivered after it was settled' | tail -1 | cut -c1-160)" \
			test "$(act_on_count 0)" = 0
	else
		fail "no double execution" "no redelivery of reboot-blink-1 answered from the executed-id log; ACT blinked $(act_on_count 0) time(s) this boot"
	fi
	wait_for 30 bash -c '[[ $(c2d queue show pump-7 -o json | grep -c "\"messageId\"" || true) == 0 ]]'
	check "queue empty" "$(c2d queue show pump-7 2>&1 | head -3 | tr '\n' ' ')" bash -c '[[ $(c2d queue show pump-7 -o json | grep -c "\"messageId\"" || true) == 0 ]]'
	timed "reboot checks"

	# The watchdog is fed for good, not only right after a start: once one agent process has lived
	# two WatchdogSec periods (plus RestartSec), systemd's record of its last keep-alive
	# (WatchdogTimestamp) is at most half a period old (the agent pings every WatchdogSec/2), and this
	# boot saw no watchdog timeout and no restart. A notify loop that stops after a while would not
	# show in boot 1, whose agents are restarted on purpose before their watchdog could fire.
	wd=$(secs "$(agent WatchdogUSec)") rs=$(secs "$(agent RestartUSec)")
	pid=$(agent MainPID) n=$(agent NRestarts)
	alive() { [[ $(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ') -ge $((2 * wd + rs + 5)) ]]; }
	wait_for $((2 * wd + rs + 30)) alive
	ping_age=$(($(date +%s) - $(date -d "$(agent WatchdogTimestamp)" +%s 2>/dev/null || echo 0)))
	wdn=$(journalctl -b --no-pager -u c2d-agent | grep -c 'Watchdog timeout')
	check "watchdog fed" "c2d-agent PID $pid up $(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ') s (want ≥ $((2 * wd + rs + 5)), WatchdogSec=${wd}s); last keep-alive ${ping_age} s ago (want ≤ $((wd / 2 + 5))); now PID $(agent MainPID), NRestarts $n→$(agent NRestarts), watchdog timeouts this boot: $wdn (want 0)" \
		bash -c "[[ $wdn == 0 && $ping_age -le $((wd / 2 + 5)) && \$(systemctl show -p MainPID --value c2d-agent) == $pid && \$(systemctl show -p NRestarts --value c2d-agent) == $n ]] && systemctl is-active -q c2d-agent"
	timed "watchdog fed"

	# README "Uninstall".
	c2d send pump-7 --props 'target=relay1;action=on' --wait 30s >/dev/null 2>&1
	sudo apt remove -y c2d-agent >/root/apt-remove.log 2>&1
	check "remove keeps /etc/c2d" "$(ls /etc/c2d | tr '\n' ' '); agent $(systemctl is-active c2d-agent); GPIO17=$(line 17) (released: reads its pull)" \
		bash -c '[[ -f /etc/c2d/agent.yaml && -f /etc/c2d/connection-string && -f /etc/c2d/hub-ca.pem && -d /var/lib/c2d-agent ]] && ! systemctl is-active -q c2d-agent'
	check "remove: stopped safe" "journal: $(journalctl -b --no-pager -u c2d-agent | grep -o 'outputs in their safe state; stopped' | tail -1)" \
		journal_has "outputs in their safe state; stopped" -u c2d-agent
	sudo apt purge -y c2d-agent >/root/apt-purge.log 2>&1
	left=$(ls /etc/c2d/agent.yaml /etc/c2d/connection-string /etc/c2d/hub-ca.pem /var/lib/c2d-agent 2>/dev/null | tr '\n' ' ')
	check purge "left: ${left:-nothing}; user c2d-agent: $(id c2d-agent >/dev/null 2>&1 && echo present || echo gone); hub.yaml $(test -f /etc/c2d/hub.yaml && echo kept)" \
		bash -c '[[ -z "'"$left"'" ]] && ! id c2d-agent >/dev/null 2>&1 && [[ -f /etc/c2d/hub.yaml ]]'
	sudo apt remove -y c2d-hub >/root/apt-remove-hub.log 2>&1
	check "hub remove keeps data" "$(ls /var/lib/c2d-hub 2>&1 | tr '\n' ' '); /etc/c2d/hub.yaml $(test -f /etc/c2d/hub.yaml && echo kept)" \
		bash -c '[[ -f /var/lib/c2d-hub/hub.db && -f /etc/c2d/hub.yaml ]] && ! systemctl is-active -q c2d-hub'
	sudo apt purge -y c2d-hub c2d >/root/apt-purge-hub.log 2>&1
	check "hub purge" "left: $(ls -d /var/lib/c2d-hub /etc/c2d 2>/dev/null | tr '\n' ' '); user c2d-hub: $(id c2d-hub >/dev/null 2>&1 && echo present || echo gone); apt: $(tail -1 /root/apt-purge-hub.log)" \
		bash -c '[[ ! -e /var/lib/c2d-hub && ! -e /etc/c2d ]] && ! id c2d-hub >/dev/null 2>&1'
	timed uninstall
}

# A step whose shell expansion fails abandons its whole function: the fail line below says so.
case $phase in
first)
	first_boot
	fail reboot "the first boot's steps ended without rebooting (an error above cut them short)"
	;;
second) second_boot ;;
*) fail phase "unknown phase $phase in $statedir/phase" ;;
esac
say DONE
systemctl poweroff
