package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// device update / renew-key / sas-token: what az iot hub users expect, through the real hub.
func TestDeviceUpdateRenewKeySASToken(t *testing.T) {
	id := newDevice(t, "verbs")
	var d iothub.Device
	jsonOut(t, &d, 0, "device", "update", id, "--status", "disabled", "--status-reason", "in-service")
	if d.Status != iothub.DeviceDisabled || d.StatusReason != "in-service" {
		t.Errorf("update --status disabled: %+v", d)
	}
	// A send to a disabled device is queued, with a warning saying how to deliver it.
	r := must(t, 0, "send", id, "--prop", "a=1")
	if !strings.Contains(r.stderr, "is disabled") || !strings.Contains(r.stderr, "c2d device enable "+id) {
		t.Errorf("send to a disabled device: no warning: %s", r)
	}
	// Filters.
	var list []iothub.Device
	jsonOut(t, &list, 0, "device", "list", "--status", "disabled")
	found := false
	for _, x := range list {
		if x.Status != iothub.DeviceDisabled {
			t.Errorf("list --status disabled returned %s (%s)", x.DeviceID, x.Status)
		}
		found = found || x.DeviceID == id
	}
	if !found {
		t.Errorf("list --status disabled lacks %s", id)
	}
	jsonOut(t, &list, 0, "device", "list", "--connected")
	for _, x := range list {
		if x.ConnectionState != "Connected" {
			t.Errorf("list --connected returned %s (%s)", x.DeviceID, x.ConnectionState)
		}
	}
	must(t, 0, "device", "update", id, "--status", "enabled")
	if r := must(t, 2, "device", "update", id); !strings.Contains(r.stderr, "nothing to update") {
		t.Errorf("update without changes: %s", r)
	}

	// renew-key: the primary key changes, the secondary stays; swap exchanges them.
	var before, after iothub.Device
	jsonOut(t, &before, 0, "device", "show", id, "--show-keys")
	must(t, 0, "device", "renew-key", id, "--key", "primary")
	jsonOut(t, &after, 0, "device", "show", id, "--show-keys")
	bk, ak := before.Authentication.SymmetricKey, after.Authentication.SymmetricKey
	if ak.PrimaryKey == bk.PrimaryKey || ak.SecondaryKey != bk.SecondaryKey || ak.PrimaryKey == "" {
		t.Errorf("renew-key primary: before %+v after %+v", bk, ak)
	}
	must(t, 0, "device", "renew-key", id, "--key", "swap")
	jsonOut(t, &before, 0, "device", "show", id, "--show-keys")
	if sk := before.Authentication.SymmetricKey; sk.PrimaryKey != ak.SecondaryKey || sk.SecondaryKey != ak.PrimaryKey {
		t.Errorf("renew-key swap: %+v from %+v", sk, ak)
	}
	if r := must(t, 2, "device", "renew-key", id); !strings.Contains(r.stderr, "--key primary") {
		t.Errorf("renew-key without --key: %s", r)
	}

	// sas-token: signed with the device's (now primary) key for hub.test/devices/ID, for --duration.
	var tok struct {
		DeviceID string    `json:"deviceId"`
		SAS      string    `json:"sas"`
		Expiry   time.Time `json:"expiryTimeUtc"`
	}
	jsonOut(t, &tok, 0, "device", "sas-token", id, "--duration", "10m")
	st, err := iothub.ParseSASToken(tok.SAS)
	if err != nil {
		t.Fatalf("sas-token %q: %v", tok.SAS, err)
	}
	if err := st.Verify(before.Authentication.SymmetricKey.PrimaryKey, "hub.test/devices/"+id, time.Now()); err != nil {
		t.Errorf("sas-token does not verify with the device key: %v", err)
	}
	if d := time.Until(st.Expiry); d < 9*time.Minute || d > 11*time.Minute {
		t.Errorf("sas-token --duration 10m expires in %s", d)
	}
	// ...and a real device connects with it as its password.
	dev := connectWithToken(t, id, tok.SAS)
	dev.Disconnect(0)
}

// Messages that once confused: each says what failed and the next command.
func TestMessagesSayWhatToDo(t *testing.T) {
	id := newDevice(t, "msg")
	wrongKey := strings.Replace(hub.Owner.String(), "SharedAccessKey=", "SharedAccessKey=AAAA", 1)
	devCS := strings.TrimSpace(must(t, 0, "device", "connection-string", id).stdout)
	http := "C2D_ENDPOINT=http://" + hub.Endpoints.HTTP
	for _, tc := range []struct {
		name  string
		env   []string
		args  []string
		code  int
		want  string
		never []string
	}{
		{"typo in a subcommand", nil, []string{"device", "lst"}, 2, `unknown command "lst" for "c2d device" (did you mean "list"?); see ` + "`c2d device --help`", nil},
		{"typo in a command", nil, []string{"sned", id}, 2, `(did you mean "send"?)`, []string{"\n\t", "Did you mean this"}},
		{"duration without unit", nil, []string{"send", id, "--wait", "10"}, 2, `--wait "10": a duration needs a unit, e.g. 10s, 5m or 1h; see ` + "`c2d send --help`", []string{"time: missing unit"}},
		{"both bodies", nil, []string{"send", id, "--data", "x", "--data-file", "f"}, 2, "--data and --data-file both give the message body: use one of them", []string{"group"}},
		{"device connection string", []string{http, "C2D_CONNECTION_STRING=" + devCS}, []string{"device", "list"}, 2, "is device \"" + id + "\"'s (it has DeviceId=)", []string{"unknown key"}},
		{"wrong key", []string{http, "C2D_CONNECTION_STRING=" + wrongKey}, []string{"device", "list"}, 8,
			"unauthorized: the hub does not accept the key in the connection string of policy \"iothubowner\" (wrong, or rotated since it was printed); get a current connection string on the hub's machine with `c2d-hub connection-string --data DIR --policy iothubowner`",
			[]string{"RegistryRead", "primary or secondary"}},
		{"duplicate create", nil, []string{"device", "create", id}, 1, "device \"" + id + "\" already exists, so nothing was changed; see it with `c2d device show " + id + "`, change it with `c2d device update " + id + "`", []string{"If-Match"}},
		{"expiry without unit", nil, []string{"send", id, "--expiry", "5"}, 2, "a whole number needs a unit", []string{"30s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := hubEnv()
			if tc.env != nil {
				env = append(baseEnv(), tc.env...)
			}
			r := runEnv(t, env, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("want exit %d and %q, got %s", tc.code, tc.want, r)
			}
			for _, n := range tc.never {
				if strings.Contains(r.stderr, n) {
					t.Errorf("stderr says %q: %s", n, r.stderr)
				}
			}
		})
	}
}

func TestVerboseShowsRequestsNotTokens(t *testing.T) {
	id := newDevice(t, "verbose")
	r := must(t, 0, "device", "show", id, "--verbose")
	if !strings.Contains(r.stderr, "> GET http://"+hub.Endpoints.HTTP+"/devices/"+id+"?api-version=") || !strings.Contains(r.stderr, "< 200 OK (") {
		t.Errorf("--verbose: %s", r)
	}
	if strings.Contains(r.stderr, "SharedAccessSignature") || strings.Contains(r.stderr, "sig=") {
		t.Errorf("--verbose printed a token: %s", r.stderr)
	}
}

func TestHubStatusJSONWhenDown(t *testing.T) {
	r := runEnv(t, append(baseEnv(), "C2D_CONNECTION_STRING="+hub.Owner.String(), "C2D_ENDPOINT=http://127.0.0.1:1"), "hub", "status", "-o", "json")
	if r.code != 10 {
		t.Fatalf("want exit 10: %s", r)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("stdout is not JSON: %v: %s", err, r)
	}
	if st["reachable"] != false || st["healthy"] != false || st["endpoint"] != "http://127.0.0.1:1" {
		t.Errorf("hub status -o json when down: %v", st)
	}
}

// connectWithToken connects a plain MQTT client as device id with tok as its password.
func connectWithToken(t *testing.T, id, tok string) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + hub.Endpoints.MQTT).
		SetClientID(id).SetUsername(iothub.FormatUsername("hub.test", id, "", nil)).SetPassword(tok).
		SetCleanSession(true).SetAutoReconnect(false).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connect %s with its sas-token: %v", id, tk.Error())
	}
	return c
}
