"""Windows window lookup: the foreground window, and a game's window by class or executable."""

from __future__ import annotations

import ctypes
import functools
import ntpath
from collections.abc import Callable
from ctypes import wintypes
from dataclasses import dataclass
from typing import Any

from capture.inputs._base import WindowInfo

PROCESS_QUERY_LIMITED_INFORMATION = 0x1000   # enough for elevated processes too
DWMWA_EXTENDED_FRAME_BOUNDS = 9
S_OK = 0
CLASS_NAME_CHARS = 256                        # the longest window class name Windows allows
PATH_CHARS = 32768

Prototypes = dict[str, tuple[Any, list[Any]]]  # function -> (restype, argtypes)


@dataclass
class Libraries:
    """The DLLs a module calls: loaded on first use; tests put fakes in their place."""

    user32: Any
    kernel32: Any
    dwmapi: Any | None = None                 # missing on some server editions


_libraries: Libraries | None = None


def libraries() -> Libraries:
    """user32, kernel32 and dwmapi with the prototypes this module uses."""
    global _libraries
    if _libraries is None:
        _libraries = _load()
    return _libraries


def load_library(name: str, prototypes: Prototypes) -> Any:
    """A Windows DLL with restype/argtypes set, so handles keep their 64 bits.

    A function this Windows lacks stays missing: calling it raises AttributeError.
    """
    library = ctypes.WinDLL(name, use_last_error=True)  # type: ignore[attr-defined]
    for function, (restype, argtypes) in prototypes.items():
        pointer = getattr(library, function, None)
        if pointer is not None:
            pointer.restype, pointer.argtypes = restype, argtypes
    return library


def _load() -> Libraries:
    w, pointer = wintypes, ctypes.POINTER
    user32 = load_library("user32", {
        "GetForegroundWindow": (w.HWND, []),
        "GetWindowThreadProcessId": (w.DWORD, [w.HWND, pointer(w.DWORD)]),
        "GetClassNameW": (ctypes.c_int, [w.HWND, w.LPWSTR, ctypes.c_int]),
        "GetWindowTextLengthW": (ctypes.c_int, [w.HWND]),
        "GetWindowTextW": (ctypes.c_int, [w.HWND, w.LPWSTR, ctypes.c_int]),
        "GetWindowRect": (w.BOOL, [w.HWND, pointer(w.RECT)]),
        "IsWindowVisible": (w.BOOL, [w.HWND]),
        "EnumWindows": (w.BOOL, [_enum_windows_proc(), w.LPARAM]),
    })
    kernel32 = load_library("kernel32", {
        "OpenProcess": (w.HANDLE, [w.DWORD, w.BOOL, w.DWORD]),
        "QueryFullProcessImageNameW": (w.BOOL, [w.HANDLE, w.DWORD, w.LPWSTR, pointer(w.DWORD)]),
        "CloseHandle": (w.BOOL, [w.HANDLE]),
    })
    try:
        dwmapi = load_library("dwmapi", {
            # LONG, not HRESULT: ctypes would raise on failure, and failure is an answer here.
            "DwmGetWindowAttribute": (w.LONG, [w.HWND, w.DWORD, pointer(w.RECT), w.DWORD]),
        })
    except OSError:
        dwmapi = None
    return Libraries(user32=user32, kernel32=kernel32, dwmapi=dwmapi)


def function_type() -> Callable[..., Any]:
    """WINFUNCTYPE (stdcall) on Windows; CFUNCTYPE elsewhere, where only tests make callbacks."""
    return getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)


@functools.cache
def _enum_windows_proc() -> Any:
    return function_type()(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)


def foreground_window() -> WindowInfo | None:
    """The window the user is working in now, or None (no foreground window, e.g. mid-switch)."""
    hwnd = libraries().user32.GetForegroundWindow()
    return window_info(hwnd) if hwnd else None


def find_window(game: str) -> WindowInfo | None:
    """The topmost visible top-level window whose class or executable is `game`."""
    user32 = libraries().user32
    found: list[WindowInfo] = []
    failures: list[Exception] = []

    def visit(hwnd: int, _lparam: int) -> bool:
        try:
            if user32.IsWindowVisible(hwnd):
                info = window_info(hwnd)
                if info is not None and matches(info, game):
                    found.append(info)
                    return False  # stop: EnumWindows goes from the top of the z-order down
            return True
        except Exception as exc:  # a callback cannot raise through Windows
            failures.append(exc)
            return False

    user32.EnumWindows(_enum_windows_proc()(visit), 0)
    if failures:
        raise failures[0]
    return found[0] if found else None


def matches(info: WindowInfo, game: str) -> bool:
    """WindowInfo.matches, also accepting the executable with its '.exe'."""
    return info.matches(game) or info.matches(executable_name(game))


def window_info(hwnd: int) -> WindowInfo | None:
    """Class, title, process and geometry of a window; None if it is gone."""
    user32 = libraries().user32
    class_name = ctypes.create_unicode_buffer(CLASS_NAME_CHARS)
    if not user32.GetClassNameW(hwnd, class_name, CLASS_NAME_CHARS):
        return None
    pid = wintypes.DWORD()
    user32.GetWindowThreadProcessId(hwnd, pid)
    return WindowInfo(
        window_id=int(hwnd),
        wm_class=(class_name.value,),
        title=window_title(hwnd),
        pid=pid.value or None,
        executable=process_executable(pid.value) if pid.value else None,
        geometry=window_geometry(hwnd),
    )


def window_thread_id(hwnd: int) -> int:
    """The thread that owns a window (its keyboard layout is the one the game types with)."""
    return int(libraries().user32.GetWindowThreadProcessId(hwnd, None))


def window_title(hwnd: int) -> str:
    user32 = libraries().user32
    length = user32.GetWindowTextLengthW(hwnd)
    if length <= 0:
        return ""
    title = ctypes.create_unicode_buffer(length + 1)
    user32.GetWindowTextW(hwnd, title, length + 1)
    return title.value


def process_executable(pid: int) -> str | None:
    """The executable name of a process without '.exe' ('minetest'); None if not ours to read."""
    kernel32 = libraries().kernel32
    process = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not process:
        return None  # gone, or protected (anti-cheat, system processes)
    try:
        path = ctypes.create_unicode_buffer(PATH_CHARS)
        size = wintypes.DWORD(PATH_CHARS)
        if not kernel32.QueryFullProcessImageNameW(process, 0, path, size):
            return None
        return executable_name(path.value)
    finally:
        kernel32.CloseHandle(process)


def executable_name(path: str) -> str:
    """'C:\\Games\\Minetest.exe' -> 'Minetest'."""
    name = ntpath.basename(path)
    return name[:-4] if name.lower().endswith(".exe") else name


def window_geometry(hwnd: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the visible frame; zeros if the window is gone.

    DWM's extended frame bounds leave out the invisible resize borders and are in physical
    pixels; GetWindowRect (the fallback) is scaled for DPI-unaware callers.
    """
    libs = libraries()
    rect = wintypes.RECT()
    dwm_ok = libs.dwmapi is not None and libs.dwmapi.DwmGetWindowAttribute(
        hwnd, DWMWA_EXTENDED_FRAME_BOUNDS, rect, ctypes.sizeof(rect)) == S_OK
    if not dwm_ok and not libs.user32.GetWindowRect(hwnd, rect):
        return (0, 0, 0, 0)
    return (rect.left, rect.top, rect.right - rect.left, rect.bottom - rect.top)
