"""Windows input backend: Raw Input on a message-only window, gated on the game having focus."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from ctypes import wintypes
from typing import Any

from capture.clock import now_ns
from capture.errors import CaptureError
from capture.inputs import _rawinput as raw
from capture.inputs import win32_focus
from capture.inputs._base import InputBackend, WindowInfo
from capture.inputs._rawinput import RAWINPUTDEVICE, KeyState, ScreenArea
from capture.inputs._win32api import callback_types, libraries, os_error

__all__ = ["Win32InputBackend"]

WM_DESTROY, WM_CLOSE, WM_INPUT, WM_TIMER = 0x0002, 0x0010, 0x00FF, 0x0113
HWND_MESSAGE = -3
EVENT_SYSTEM_FOREGROUND, WINEVENT_OUTOFCONTEXT = 0x0003, 0x0000
MAPVK_VK_TO_CHAR = 2
DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2 = -4
SM_CXSCREEN, SM_CYSCREEN = 0, 1
SM_XVIRTUALSCREEN, SM_YVIRTUALSCREEN, SM_CXVIRTUALSCREEN, SM_CYVIRTUALSCREEN = 76, 77, 78, 79
FOCUS_TIMER_ID, POINTER_TIMER_ID = 1, 2
FOCUS_POLL_MS = 100                # catches what no foreground event reported
POINTER_TIMER_MS = 10             # a throttled cursor report follows this much later
START_TIMEOUT_S = 5.0


class Win32InputBackend(InputBackend):
    """Raw Input (keyboard, raw mouse deltas) while a window matching `game` is in the foreground.

    A thread owns a message-only window registered for raw input with RIDEV_INPUTSINK, so input
    arrives while the game, not we, has the foreground. Raw input carries no event time: events
    are stamped on receipt (time_source 'receive'). Foreground changes come from a WinEvent hook,
    a check on every report and a 100 ms poll.
    """

    name = "win32-rawinput"
    thread_name = "win32-input"
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, game: str, *, keyboard: bool = True, mouse: bool = True,
                 display: str | None = None) -> None:
        super().__init__(game, keyboard=keyboard, mouse=mouse, display=display)
        self.class_name = f"capture-rawinput-{id(self):x}"
        self.hwnd = 0
        self.instance: int | None = None
        self.class_registered = False
        self.usages: list[int] = []
        self.win_event_hook: int | None = None
        self.unreadable_reports = 0

    def find_game_window(self) -> WindowInfo | None:
        return win32_focus.find_window(self.game)

    # --- hooks ----------------------------------------------------------------------------

    def _open(self) -> None:
        """Create the message-only window, register for raw input and read the focus state."""
        self.state = KeyState(notes=self.notes, describe_device=self._describe_device)
        self.failure: Exception | None = None
        self.callbacks: list[Any] = []                  # ctypes callbacks Windows holds
        self.input_buffer = ctypes.create_string_buffer(ctypes.sizeof(raw.RAWINPUT))
        self.foreground: int | None = None               # the last foreground window looked at
        self.keyboard_layout: int | None = None
        self.pointer_timer_armed = False
        try:
            self._open_window()
        except Exception as exc:
            raise CaptureError(f"Windows raw input could not start: {exc}") from exc

    def _open_window(self) -> None:
        user32, kernel32 = libraries().user32, libraries().kernel32
        try:  # cursor and screen sizes in physical pixels, as the video has them (this thread)
            dpi_aware = user32.SetThreadDpiAwarenessContext(
                DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2)
        except AttributeError:
            dpi_aware = None
        if not dpi_aware:
            self.notes.append("not per-monitor DPI aware: cursor positions may be scaled")
        window_proc_type, win_event_proc_type, window_class_type = callback_types()
        window_proc = window_proc_type(self.window_proc)
        on_win_event = win_event_proc_type(self._on_foreground_event)
        self.callbacks += [window_proc, on_win_event]
        self.instance = kernel32.GetModuleHandleW(None)
        window_class = window_class_type(cbSize=ctypes.sizeof(window_class_type),
                                         lpfnWndProc=window_proc, hInstance=self.instance,
                                         lpszClassName=self.class_name)
        if not user32.RegisterClassExW(window_class):
            raise os_error("RegisterClassExW")
        self.class_registered = True
        self.hwnd = user32.CreateWindowExW(0, self.class_name, "capture raw input", 0, 0, 0, 0,
                                           0, HWND_MESSAGE, None, self.instance, None) or 0
        if not self.hwnd:
            raise os_error("CreateWindowExW")
        usages = ([raw.USAGE_MOUSE] if self.mouse else []) + (
            [raw.USAGE_KEYBOARD] if self.keyboard else [])
        if usages:
            self._register(usages, raw.RIDEV_INPUTSINK, self.hwnd)
            self.usages = usages
        self.win_event_hook = user32.SetWinEventHook(
            EVENT_SYSTEM_FOREGROUND, EVENT_SYSTEM_FOREGROUND, None, on_win_event, 0, 0,
            WINEVENT_OUTOFCONTEXT)
        if not self.win_event_hook:
            self.notes.append("no foreground-change events: focus polled every 100 ms")
        if not user32.SetTimer(self.hwnd, FOCUS_TIMER_ID, FOCUS_POLL_MS, None):
            raise os_error("SetTimer")
        self._check_foreground(now_ns())

    def _register(self, usages: list[int], flags: int, target: int | None) -> None:
        devices = (RAWINPUTDEVICE * len(usages))(
            *(RAWINPUTDEVICE(raw.USAGE_PAGE_GENERIC_DESKTOP, usage, flags, target)
              for usage in usages))
        if not libraries().user32.RegisterRawInputDevices(devices, len(usages),
                                                          ctypes.sizeof(RAWINPUTDEVICE)):
            raise os_error("RegisterRawInputDevices")

    def _pump(self) -> None:
        user32 = libraries().user32
        message = wintypes.MSG()
        while (result := user32.GetMessageW(message, None, 0, 0)) != 0:
            if result == -1:
                raise os_error("GetMessageW")
            user32.DispatchMessageW(message)
        if self.failure is not None:
            raise self.failure

    def _wake(self) -> bool:
        if not self.hwnd:
            return True  # the window is gone: the loop is ending by itself
        return bool(libraries().user32.PostMessageW(self.hwnd, WM_CLOSE, 0, 0))

    def _query_pointer(self) -> tuple[int, int] | None:
        point = wintypes.POINT()
        if not libraries().user32.GetCursorPos(point):
            return None  # e.g. the secure desktop (UAC prompt, lock screen) is showing
        return int(point.x), int(point.y)

    def _close(self) -> None:
        user32 = libraries().user32
        if self.usages:
            try:
                self._register(self.usages, raw.RIDEV_REMOVE, None)
            except OSError as exc:
                self.notes.append(f"raw input not unregistered: {exc}")
            self.usages = []
        if self.win_event_hook:
            user32.UnhookWinEvent(self.win_event_hook)
            self.win_event_hook = None
        if self.hwnd:
            user32.DestroyWindow(self.hwnd)
        if self.class_registered:
            user32.UnregisterClassW(self.class_name, self.instance)
            self.class_registered = False
        if self.unreadable_reports:
            self.notes.append(
                f"{self.unreadable_reports} raw input reports could not be read (dropped)")
            self.unreadable_reports = 0

    # --- messages (on the backend thread) -------------------------------------------------

    def window_proc(self, hwnd: int, message: int, wparam: int, lparam: int) -> int:
        """The window procedure: every message of the capture window comes through here."""
        user32 = libraries().user32
        if message == WM_INPUT:
            self._guarded(self._on_wm_input, lparam)
        elif message == WM_TIMER:
            self._guarded(self._on_timer, wparam)
        elif message == WM_CLOSE:
            user32.DestroyWindow(hwnd)
            return 0
        elif message == WM_DESTROY:
            self.hwnd = 0
            user32.PostQuitMessage(0)
            return 0
        # WM_INPUT too: DefWindowProc frees the report's resources.
        return int(user32.DefWindowProcW(hwnd, message, wparam, lparam) or 0)

    def _guarded(self, handler: Callable[..., None], *args: Any) -> None:
        """Run a message handler; a callback cannot raise through Windows: end the loop."""
        try:
            handler(*args)
        except Exception as exc:
            self.failure = self.failure or exc
            libraries().user32.PostQuitMessage(0)

    def _on_wm_input(self, raw_input_handle: int) -> None:
        received_ns = now_ns()
        self._check_foreground(received_ns)
        if not self._accepting(received_ns, "receive"):
            return  # no need to read it: the game is not in the foreground
        size = wintypes.UINT(len(self.input_buffer))
        copied = libraries().user32.GetRawInputData(raw_input_handle, raw.RID_INPUT,
                                                    self.input_buffer, size, raw.HEADER_SIZE)
        if copied in (0, raw.RAW_INPUT_ERROR):
            self.unreadable_reports += 1
            return
        try:
            events = raw.parse_rawinput(self.input_buffer.raw[:copied], received_ns, self.state)
        except ValueError:  # a truncated report: drop it, keep capturing
            self.unreadable_reports += 1
            return
        for event in events:
            self._input(event)
        self._report_pointer_if_due()
        if self._pointer_due_ns() is not None and not self.pointer_timer_armed:
            libraries().user32.SetTimer(self.hwnd, POINTER_TIMER_ID, POINTER_TIMER_MS, None)
            self.pointer_timer_armed = True

    def _on_timer(self, timer_id: int) -> None:
        if timer_id == FOCUS_TIMER_ID:
            self._check_foreground(now_ns())
            if self._focused and self.foreground:
                self._refresh_keyboard_layout(self.foreground)
        elif timer_id == POINTER_TIMER_ID:
            libraries().user32.KillTimer(self.hwnd, POINTER_TIMER_ID)
            self.pointer_timer_armed = False
            if self._pointer_due_ns() is not None:
                self._report_pointer()

    def _on_foreground_event(self, _hook: int, _event: int, _hwnd: int, _object: int,
                             _child: int, _thread: int, _time_ms: int) -> None:
        self._guarded(self._check_foreground, now_ns())

    # --- focus ----------------------------------------------------------------------------

    def _check_foreground(self, t_ns: int) -> None:
        """Compare the foreground window with the last one seen; cheap when it is the same."""
        hwnd = libraries().user32.GetForegroundWindow() or 0
        if hwnd == self.foreground:
            return
        self.foreground = hwnd
        info = win32_focus.window_info(hwnd) if hwnd else None
        is_game = info is not None and win32_focus.matches(info, self.game)
        if is_game and not self._focused:
            self._refresh_keyboard_layout(hwnd)
            self._read_screen()
        elif not is_game:
            self.state.e1_pending = False
        self._set_focus(is_game, info, t_ns)
        self._settle()
        self._report_pointer_if_due()  # on focus_in: where the cursor is now

    def _refresh_keyboard_layout(self, hwnd: int) -> None:
        """Name the layout-dependent (VK_OEM_*) keys as the game's keyboard layout types them."""
        user32 = libraries().user32
        layout = user32.GetKeyboardLayout(win32_focus.window_thread_id(hwnd))
        if layout == self.keyboard_layout:
            return
        self.keyboard_layout = layout
        self.state.layout_names = raw.layout_key_names(
            lambda vkey: int(user32.MapVirtualKeyExW(vkey, MAPVK_VK_TO_CHAR, layout)))

    def _read_screen(self) -> None:
        metric = libraries().user32.GetSystemMetrics
        self.state.screen = ScreenArea(
            virtual_desktop=(metric(SM_XVIRTUALSCREEN), metric(SM_YVIRTUALSCREEN),
                             metric(SM_CXVIRTUALSCREEN), metric(SM_CYVIRTUALSCREEN)),
            primary_size=(metric(SM_CXSCREEN), metric(SM_CYSCREEN)))

    def _describe_device(self, handle: int) -> str | None:
        """A device label from its interface path (vendor and product id only)."""
        if not handle:
            return None
        user32 = libraries().user32
        chars = wintypes.UINT(0)
        user32.GetRawInputDeviceInfoW(handle, raw.RIDI_DEVICENAME, None, chars)
        if not chars.value:
            return None
        path = ctypes.create_unicode_buffer(chars.value)
        copied = user32.GetRawInputDeviceInfoW(handle, raw.RIDI_DEVICENAME, path, chars)
        if copied == raw.RAW_INPUT_ERROR:
            return None
        return raw.device_label(path.value, handle)
