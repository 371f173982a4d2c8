// SPDX-License-Identifier: MIT OR GPL-2.0
/* Stand-in nvidia_modeset: a module that depends on nvidia, nothing more. */
#include <linux/module.h>

extern const char *nvidia_stand_in_version(void);

static int __init modeset_init(void)
{
	pr_info("nvidia_modeset: stand-in for nvidia %s\n", nvidia_stand_in_version());
	return 0;
}

static void __exit modeset_exit(void) {}

module_init(modeset_init);
module_exit(modeset_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION(NV_VERSION);
MODULE_DESCRIPTION("provision's stand-in for nvidia-modeset (tests only)");
