// Package sdnotify speaks systemd's sd_notify protocol (READY=1, STATUS=, WATCHDOG=1, STOPPING=1)
// over the datagram socket named by $NOTIFY_SOCKET, so Type=notify units know when c2d is ready and
// alive. Outside systemd every call is a no-op.
package sdnotify
